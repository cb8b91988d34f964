"""NUL characters anywhere in a request and over-limit streamed bodies: structured 4xx, never 500.

PostgreSQL text cannot hold NUL (U+0000): every such input must be refused before, or when,
PostgreSQL rejects it, with the envelope's 400.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from cli.stack import EmbeddedPostgres
from cli.temporal_server import TemporalDevServer
from common.settings import Settings
from gateway.app import create_app
from tests.conftest import Tokens, make_settings, serve


def _assert_nul_refused(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"type", "message", "details"}
    assert error["type"] == "invalid_input", error
    assert "NUL" in error["message"], error


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/migration-sets/a%00b",
        "/api/v1/migration-sets/a%00b/versions/1",
        "/api/v1/databases?cursor=AA",
        "/api/v1/databases?label=team%3Da%00b",
        "/api/v1/databases?tenant_id=a%00b",
    ],
)
async def test_nul_in_path_or_query_is_400(
    api: httpx.AsyncClient, tokens: Tokens, path: str
) -> None:
    _assert_nul_refused(await api.get(path, headers=tokens.headers("infra-admin")))


async def test_nul_in_a_json_body_is_400(api: httpx.AsyncClient, tokens: Tokens) -> None:
    response = await api.post(
        "/api/v1/migration-sets",
        json={"name": "nul-set", "files": {"V1__a\u0000.sql": "SELECT 1;"}},
        headers=tokens.headers("infra-operator"),
    )
    _assert_nul_refused(response)


async def test_migration_sql_with_nul_is_400(api: httpx.AsyncClient, tokens: Tokens) -> None:
    """The loader refuses it (invalid_migration_set) or the generic guard does; never a 500."""
    response = await api.post(
        "/api/v1/migration-sets",
        json={"name": "nul-sql", "files": {"V1__a.sql": "SELECT 'a\u0000b';"}},
        headers=tokens.headers("infra-operator"),
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] in {"invalid_input", "invalid_migration_set"}


@pytest.fixture
async def small_body_gateway(
    postgres: EmbeddedPostgres, temporal_server: TemporalDevServer, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        make_settings(
            postgres, temporal_server.address, auth=settings.auth, gateway={"max_body_bytes": 2048}
        )
    )
    async for client in serve(app):
        yield client


async def _chunks(total: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * 512
        sent += 512


async def test_over_limit_chunked_json_body_is_413(
    small_body_gateway: httpx.AsyncClient, tokens: Tokens
) -> None:
    response = await small_body_gateway.post(
        "/api/v1/migration-sets",
        content=_chunks(8192),
        headers={**tokens.headers("infra-operator"), "content-type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text
    assert response.json()["error"]["type"] == "payload_too_large"


async def test_over_limit_chunked_multipart_body_is_413(
    small_body_gateway: httpx.AsyncClient, tokens: Tokens
) -> None:
    async def multipart() -> AsyncIterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="archive"; filename="a.tgz"\r\n\r\n'
        async for chunk in _chunks(8192):
            yield chunk
        yield b"\r\n--b--\r\n"

    response = await small_body_gateway.post(
        "/api/v1/migration-sets/archive",
        content=multipart(),
        headers={
            **tokens.headers("infra-operator"),
            "content-type": "multipart/form-data; boundary=b",
        },
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["type"] == "payload_too_large"
