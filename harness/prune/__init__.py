"""Cascade pruning: removal, manifest, criteria, recovery, schedules and the cascade runner."""
