"""`python -m device_agents.agent` starts here (the packed `.pyz` has its own top-level copy)."""

import sys

from .serve import main

sys.exit(main())
