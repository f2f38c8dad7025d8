"""The Optuna side of hilt: schedule search space, constraints, storage, board leases, trial pipeline."""
