"""tenantflow's tests; the tree mirrors the source tree."""
