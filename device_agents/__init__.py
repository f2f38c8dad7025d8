"""The on-board agent and the host's ways of reaching it (transports), plus board profiles."""
