"""Observability: traces (tracing.py) and metrics (metrics.py), each off unless configured."""
