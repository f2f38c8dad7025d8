"""Deployment reports, nightly regression on a device farm, Prometheus metrics."""
