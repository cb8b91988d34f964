"""The app factory and its lifespan: Temporal client and catalog pool live on ``app.state``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from common.catalog import open_catalog
from common.catalog.assignments import AssignmentRepository
from common.catalog.databases import DatabaseRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.catalog.servers import ServerRepository
from common.catalog.tenants import TenantRepository
from common.catalog.webhooks import WebhookRepository
from common.codec import EncryptionCodec
from common.crypto import CredentialCipher, KeyRing
from common.settings import Profile, Settings, get_settings
from common.telemetry.metrics import GatewayMetrics, MetricsRegistry
from common.telemetry.tracing import start_tracing
from common.temporal_client import connect_temporal
from common.version import __version__
from gateway.audit import AuditMiddleware
from gateway.auth.deps import Authenticator
from gateway.auth.jwks import JwksCache
from gateway.auth.ratelimit import RateLimiter
from gateway.auth.tokens import TokenValidator
from gateway.errors import install_error_handlers
from gateway.metrics import RequestTimingMiddleware
from gateway.metrics import router as metrics_router
from gateway.middleware import RequestContextMiddleware
from gateway.openapi import install_openapi
from gateway.progress import ProgressCache
from gateway.routers import (
    assignments,
    auth,
    codec,
    databases,
    events,
    health,
    migration_sets,
    migrations,
    monitoring,
    run_control,
    run_stream,
    run_targets,
    servers,
    system,
    target_health,
    target_runs,
    tenants,
    ui,
    webhooks,
)

log = logging.getLogger("tenantflow.gateway")


def build_authenticator(settings: Settings, http: httpx.AsyncClient) -> Authenticator:
    """Token validation against the realm's JWKS, rate limits and break-glass."""
    jwks = JwksCache(
        settings.auth.resolved_jwks_url,
        max_age=settings.auth.jwks_cache_seconds,
        min_refresh_interval=settings.auth.jwks_refresh_min_interval_seconds,
        http=http,
    )
    validator = TokenValidator(
        settings.auth, jwks, refuse_dev_keys=settings.profile is Profile.PRODUCTION
    )
    return Authenticator(settings.auth, validator, RateLimiter(settings.rate_limit))


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the gateway for ``settings`` (the process settings by default)."""
    settings = settings or get_settings()

    # Refuses bad keys before the server starts listening.
    key_ring = KeyRing.from_settings(settings.crypto)
    cipher = CredentialCipher(key_ring)
    tracing = start_tracing(settings.telemetry, "gateway")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Lazy: the gateway starts (and reports not ready) while Temporal is still coming up.
        app.state.temporal = await connect_temporal(
            settings.temporal,
            crypto=settings.crypto,
            lazy=True,
            interceptors=tracing.interceptors if tracing else (),
        )
        app.state.catalog = await open_catalog(settings.catalog)
        app.state.databases = DatabaseRepository(app.state.catalog, cipher)
        app.state.migration_sets = MigrationSetRepository(app.state.catalog)
        app.state.servers = ServerRepository(app.state.catalog, cipher)
        app.state.tenants = TenantRepository(app.state.catalog, cipher)
        tenants.register_tenant_events(app.state)
        app.state.webhooks = WebhookRepository(app.state.catalog, cipher)
        app.state.assignments = AssignmentRepository(app.state.catalog)
        http = httpx.AsyncClient(timeout=settings.auth.http_timeout_seconds)
        app.state.authenticator = build_authenticator(settings, http)
        log.info(
            "gateway started",
            extra={"url": settings.gateway.base_url(), "profile": settings.profile.value},
        )
        try:
            yield
        finally:
            await http.aclose()
            await app.state.catalog.close()
            if tracing is not None:
                await tracing.shutdown()
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
    # Per app, not global: a gateway and a worker in one process keep their numbers apart.
    app.state.metrics = (
        GatewayMetrics(MetricsRegistry(settings.telemetry, "tenantflow-gateway"))
        if settings.telemetry.metrics_enabled
        else None
    )
    app.state.progress_cache = ProgressCache()
    app.state.payload_codec = (
        EncryptionCodec(key_ring) if settings.crypto.encrypt_payloads else None
    )
    install_error_handlers(app)
    install_openapi(app)
    app.include_router(health.router)
    app.include_router(metrics_router)
    app.include_router(auth.router)
    app.include_router(databases.router)
    app.include_router(servers.router)
    app.include_router(tenants.router)
    app.include_router(target_runs.router)
    app.include_router(target_health.router)
    app.include_router(migration_sets.router)
    app.include_router(assignments.router)
    app.include_router(events.router)
    app.include_router(migrations.router)
    app.include_router(run_stream.router)
    app.include_router(run_control.router)
    app.include_router(run_targets.router)
    app.include_router(system.router)
    app.include_router(webhooks.router)
    app.include_router(codec.router)
    app.include_router(monitoring.router)
    monitoring.install_monitoring(app, settings)
    ui.mount(app, settings)
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
    app.add_middleware(AuditMiddleware)
    # Inside the request-context guard: a crash it turns into a 500 is counted as one.
    app.add_middleware(
        RequestTimingMiddleware, metrics=app.state.metrics, window=app.state.monitoring.latency
    )
    # Added last, so it is the outermost layer: every response, even a crash, gets an id.
    app.add_middleware(
        RequestContextMiddleware,
        access_log_enabled=settings.log.access_log,
        https=settings.gateway.base_url().startswith("https://"),
        max_body_bytes=settings.gateway.max_body_bytes,
    )
    if tracing is not None:
        # Wraps the whole middleware stack, so even the access log line carries the trace id.
        tracing.instrument_app(app)
    return app
