"""Cross-cutting code shared by the gateway, the worker and the CLI.

Belongs here: settings, logging, the error hierarchy, the catalog database pool and its own schema,
and (later) cryptography helpers. Nothing here imports from ``gateway``, ``worker`` or ``cli``.
"""
