"""Temporal activities: everything that touches a database or the network.

Activities are methods of classes that receive their dependencies (pools, settings) in the
constructor; the worker registers the bound methods. Workflows reference them by function.
"""
