"""The ``tenantflow`` command: embedded dev stack, worker, gateway and operator commands.

Belongs here: argument parsing, console output (the only place ``print`` is allowed) and the
embedded-services launcher (``cli.stack``) that ``make dev`` and the tests share.
"""
