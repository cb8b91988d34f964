"""The Temporal worker process and the Temporal client factory.

Belongs here: ``connect_temporal`` (data converter, later the payload codec and interceptors), the
registry of workflows and activities a worker runs, and the worker's entry point with clean
shutdown on SIGTERM/SIGINT.
"""
