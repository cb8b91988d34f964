"""Helpers of the fault tests (``tests/integration/test_faults.py``): the processes they break,
the clients that watch a run meanwhile, and the fleet they check afterwards."""
