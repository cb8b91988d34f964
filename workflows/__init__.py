"""Deterministic Temporal workflow definitions and their retry/timeout policies.

A module here imports only ``temporalio``, ``models`` and activity stubs (enforced by ruff's
banned-api rules in ``workflows/ruff.toml``): no I/O, no clocks, no randomness outside
``workflow.*``. Every change keeps the replay tests in ``tests/workflows`` green.
"""
