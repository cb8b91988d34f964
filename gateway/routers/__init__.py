"""Feature routers of the gateway, one module per feature."""
