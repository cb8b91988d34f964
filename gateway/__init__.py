"""The HTTP API (FastAPI): app factory, lifespan, middleware, dependencies and feature routers.

Belongs here: everything HTTP. Routers live in ``gateway/routers/`` by feature, declare their
permissions and error responses, and reach Temporal and the catalog only through ``gateway.deps``.
"""
