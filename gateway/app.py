"""The app factory and its lifespan: Temporal client and catalog pool live on ``app.state``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from common.catalog import open_catalog
from common.settings import Settings, get_settings
from common.version import __version__
from gateway.errors import install_error_handlers
from gateway.middleware import RequestContextMiddleware
from gateway.openapi import install_openapi
from gateway.routers import health, system
from worker.client import connect_temporal

log = logging.getLogger("tenantflow.gateway")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the gateway for ``settings`` (the process settings by default)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Lazy: the gateway starts (and reports not ready) while Temporal is still coming up.
        app.state.temporal = await connect_temporal(settings.temporal, lazy=True)
        app.state.catalog = await open_catalog(settings.catalog)
        log.info(
            "gateway started",
            extra={"url": settings.gateway.base_url(), "profile": settings.profile.value},
        )
        try:
            yield
        finally:
            await app.state.catalog.close()
            log.info("gateway stopped")

    app = FastAPI(
        title="tenantflow",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url="/redoc",
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    install_error_handlers(app)
    install_openapi(app)
    app.include_router(health.router)
    app.include_router(system.router)
    if settings.gateway.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.gateway.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID", "X-Namespace"],
            expose_headers=["X-Request-ID", "Retry-After"],
            allow_credentials=True,
            max_age=600,
        )
    # Added last, so it is the outermost layer: every response, even a crash, gets an id.
    app.add_middleware(
        RequestContextMiddleware,
        access_log_enabled=settings.log.access_log,
        https=settings.gateway.base_url().startswith("https://"),
    )
    return app
