"""The Structural Independence Assumption (SIA) as a checkable condition.

Scoring components one at a time is only trustworthy when removing one does not change the value
of the others. `structural_verdict` reads that off the architecture; `check_sia` measures it on the
model and data (criterion fidelity, additivity of removals, rank stability) and turns the metrics
into a verdict per ratio and a predictable horizon per granularity.
"""

from harness.sia.empirical import GranularityResult, RatioResult
from harness.sia.run import SIAReport, check_sia, predictable_horizon
from harness.sia.structural import StructuralVerdict, structural_verdict
from harness.sia.verdict import Thresholds

__all__ = [
    "GranularityResult",
    "RatioResult",
    "SIAReport",
    "StructuralVerdict",
    "Thresholds",
    "check_sia",
    "predictable_horizon",
    "structural_verdict",
]
