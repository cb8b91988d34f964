"""Liveness and readiness against real services, and readiness naming what is down."""

from __future__ import annotations

from pathlib import Path

import httpx

from cli.dev_issuer import DevIssuer
from cli.stack import EmbeddedPostgres, free_port
from cli.temporal_server import TemporalDevServer
from common.settings import Settings
from common.version import __version__
from gateway.app import create_app
from tests.conftest import Tokens, auth_settings, make_settings, serve


async def test_health_is_200_with_version(api: httpx.AsyncClient) -> None:
    response = await api.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__}


async def test_ready_is_200_when_everything_answers(api: httpx.AsyncClient) -> None:
    response = await api.get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "up"
    assert body["dependencies"]["temporal"]["status"] == "up"
    assert body["dependencies"]["catalog"]["status"] == "up"
    assert body["dependencies"]["catalog"]["latency_ms"] >= 0


async def test_ready_is_503_naming_temporal_when_it_is_down(
    postgres: EmbeddedPostgres, settings: Settings
) -> None:
    down = make_settings(
        postgres,
        f"127.0.0.1:{free_port()}",
        gateway={"readiness_timeout_seconds": 1.0},
    )
    async for client in serve(create_app(down)):
        response = await client.get("/health/ready")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "down"
        assert body["dependencies"]["temporal"]["status"] == "down"
        assert body["dependencies"]["temporal"]["error"] == "Temporal does not answer"
        assert body["dependencies"]["catalog"]["status"] == "up"
        # Liveness does not depend on Temporal.
        assert (await client.get("/health")).status_code == 200
    assert settings.temporal.address != down.temporal.address


async def test_ready_follows_temporal_going_down_and_up(
    postgres: EmbeddedPostgres, service_dir: Path
) -> None:
    server = TemporalDevServer(service_dir / "temporal", free_port(), None)
    try:
        server.start()
        app = create_app(
            make_settings(postgres, server.address, gateway={"readiness_timeout_seconds": 1.0})
        )
        async for client in serve(app):
            assert (await client.get("/health/ready")).status_code == 200
            server.stop()
            response = await client.get("/health/ready")
            assert response.status_code == 503
            assert response.json()["dependencies"]["temporal"]["status"] == "down"
            server.start()
            assert (await client.get("/health/ready")).status_code == 200
    finally:
        server.stop()


async def test_ready_is_503_naming_the_catalog_when_it_is_down(
    service_dir: Path, temporal_server: TemporalDevServer
) -> None:
    catalog = EmbeddedPostgres(service_dir / "pg", free_port())
    catalog.start()
    try:
        app = create_app(
            make_settings(
                catalog, temporal_server.address, gateway={"readiness_timeout_seconds": 1.0}
            )
        )
        async for client in serve(app):
            catalog.stop()
            response = await client.get("/health/ready")
            assert response.status_code == 503
            body = response.json()
            assert body["dependencies"]["catalog"]["status"] == "down"
            assert body["dependencies"]["temporal"]["status"] == "up"
            assert catalog.password not in response.text
    finally:
        catalog.stop()


async def test_while_the_catalog_is_down_calls_get_a_503_and_work_again_after(
    service_dir: Path, temporal_server: TemporalDevServer, dev_issuer: DevIssuer, tokens: Tokens
) -> None:
    catalog = EmbeddedPostgres(service_dir / "pg", free_port())
    catalog.start()
    try:
        settings = make_settings(
            catalog,
            temporal_server.address,
            auth=auth_settings(dev_issuer),
            gateway={"readiness_timeout_seconds": 1.0},
        )
        headers = tokens.headers("infra-viewer")
        async for client in serve(create_app(settings)):
            assert (await client.get("/api/v1/databases", headers=headers)).status_code == 200
            catalog.stop()
            ready = await client.get("/health/ready")
            assert ready.status_code == 503 and ready.headers["retry-after"] == "5"
            for _ in range(3):  # the pooled connection, then new connects refused
                answer = await client.get("/api/v1/databases", headers=headers)
                assert answer.status_code == 503, answer.text
                error = answer.json()["error"]
                assert error["type"] == "catalog_unavailable"
                assert error["details"]["dependency"] == "catalog"
                assert answer.headers["retry-after"] == "5"
                assert catalog.password not in answer.text
            catalog.start()
            assert (await client.get("/api/v1/databases", headers=headers)).status_code == 200
            assert (await client.get("/health/ready")).status_code == 200
    finally:
        catalog.stop()
