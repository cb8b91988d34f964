"""``/api/v1/webhooks`` over HTTP: real gateway, PostgreSQL catalog and Temporal."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from cli.stack import free_port
from common.catalog.webhooks import secret_context
from common.crypto import CredentialCipher, KeyRing
from common.settings import Settings
from gateway.app import create_app
from tests.conftest import LEAK_CANARIES, Tokens, serve

URL = "/api/v1/webhooks"


@pytest.fixture(autouse=True)
async def _forget_endpoints(catalog_pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Endpoints made here point nowhere: delete them so no later run delivers to them."""
    before = await catalog_pool.fetchval("SELECT now()")
    yield
    await catalog_pool.execute("DELETE FROM webhook_endpoints WHERE created_at >= $1", before)


async def _create(api: httpx.AsyncClient, tokens: Tokens, **overrides: object) -> httpx.Response:
    body: dict[str, object] = {
        "url": "https://receiver.example.com/hooks",
        "event_types": ["migration.completed", "migration.failed"],
        "description": "ops channel",
    }
    body.update(overrides)
    return await api.post(URL, json=body, headers=tokens.headers("infra-operator"))


async def test_create_shows_the_secret_once_and_stores_it_encrypted(
    api: httpx.AsyncClient, tokens: Tokens, catalog_pool: asyncpg.Pool, settings: Settings
) -> None:
    created = await _create(api, tokens)
    assert created.status_code == 201, created.text
    body = created.json()
    secret = body["secret"]
    LEAK_CANARIES.add(secret)
    assert secret.startswith("whsec_")
    assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"))) <= 32
    assert body["enabled"] is True and body["disabled_reason"] is None
    assert body["event_types"] == ["migration.completed", "migration.failed"]
    webhook_id = body["id"]

    headers = tokens.headers("infra-operator")
    fetched = await api.get(f"{URL}/{webhook_id}", headers=headers)
    assert fetched.status_code == 200
    assert "secret" not in fetched.json()
    assert secret not in fetched.text
    listed = await api.get(URL, headers=headers)
    assert webhook_id in [w["id"] for w in listed.json()["items"]]
    assert secret not in listed.text

    row = await catalog_pool.fetchrow(
        "SELECT secret_encrypted, secret_key_id FROM webhook_endpoints WHERE id = $1",
        uuid.UUID(webhook_id),
    )
    assert row is not None
    assert secret not in row["secret_encrypted"]
    assert row["secret_key_id"] == body["secret_key_id"] == settings.crypto.active_key_id
    cipher = CredentialCipher(KeyRing.from_settings(settings.crypto))
    plain = cipher.decrypt(row["secret_encrypted"], context=secret_context(uuid.UUID(webhook_id)))
    assert plain == secret


async def test_patch_changes_fields_and_reenabling_clears_the_reason(
    api: httpx.AsyncClient, tokens: Tokens, catalog_pool: asyncpg.Pool
) -> None:
    webhook_id = (await _create(api, tokens)).json()["id"]
    headers = tokens.headers("infra-operator")
    changed = await api.patch(
        f"{URL}/{webhook_id}",
        json={"url": "http://other.example.com/x", "event_types": ["database.drifted"]},
        headers=headers,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["url"] == "http://other.example.com/x"
    assert changed.json()["event_types"] == ["database.drifted"]
    assert changed.json()["description"] == "ops channel"

    # As a 410 from the receiver would leave it:
    await catalog_pool.execute(
        "UPDATE webhook_endpoints SET enabled = false, disabled_reason = 'gone' WHERE id = $1",
        uuid.UUID(webhook_id),
    )
    disabled = await api.get(f"{URL}/{webhook_id}", headers=headers)
    assert disabled.json()["enabled"] is False
    assert disabled.json()["disabled_reason"] == "gone"
    enabled = await api.patch(f"{URL}/{webhook_id}", json={"enabled": True}, headers=headers)
    assert enabled.json()["enabled"] is True
    assert enabled.json()["disabled_reason"] is None

    off = await api.patch(f"{URL}/{webhook_id}", json={"enabled": False}, headers=headers)
    assert off.json()["enabled"] is False


async def test_delete_then_everything_is_404(api: httpx.AsyncClient, tokens: Tokens) -> None:
    webhook_id = (await _create(api, tokens)).json()["id"]
    headers = tokens.headers("infra-operator")
    assert (await api.delete(f"{URL}/{webhook_id}", headers=headers)).status_code == 204
    for response in (
        await api.get(f"{URL}/{webhook_id}", headers=headers),
        await api.patch(f"{URL}/{webhook_id}", json={"enabled": True}, headers=headers),
        await api.delete(f"{URL}/{webhook_id}", headers=headers),
        await api.get(f"{URL}/{webhook_id}/deliveries", headers=headers),
        await api.get(f"{URL}/{webhook_id}/deliveries/evt-1", headers=headers),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["error"]["type"] == "not_found"


@pytest.mark.parametrize(
    "overrides",
    [
        {"url": "ftp://receiver.example.com/x"},
        {"url": "not a url"},
        {"event_types": []},
        {"event_types": ["tenant.created"]},
        {"event_types": ["migration.failed", "migration.failed"]},
        {"description": "x" * 501},
        {"secret": "whsec_mine"},
    ],
    ids=["ftp", "garbage-url", "no-types", "unknown-type", "repeated-type", "long", "own-secret"],
)
async def test_bad_input_is_an_enveloped_422(
    api: httpx.AsyncClient, tokens: Tokens, overrides: dict[str, object]
) -> None:
    response = await _create(api, tokens, **overrides)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "validation_error"
    assert error["message"]


async def test_bad_ids_and_patch_values_are_422(api: httpx.AsyncClient, tokens: Tokens) -> None:
    headers = tokens.headers("infra-operator")
    assert (await api.get(f"{URL}/not-a-uuid", headers=headers)).status_code == 422
    webhook_id = (await _create(api, tokens)).json()["id"]
    bad = await api.patch(f"{URL}/{webhook_id}", json={"event_types": ["x"]}, headers=headers)
    assert bad.status_code == 422
    assert bad.json()["error"]["type"] == "validation_error"
    bad_event = await api.get(f"{URL}/{webhook_id}/deliveries/has space", headers=headers)
    assert bad_event.status_code == 422
    bad_page = await api.get(
        f"{URL}/{webhook_id}/deliveries", params={"next_page": "%%%"}, headers=headers
    )
    assert bad_page.status_code == 400
    assert bad_page.json()["error"]["type"] == "invalid_input"


@pytest.mark.parametrize(
    ("role", "status"),
    [(None, 401), ("infra-viewer", 403), ("infra-operator", 200), ("infra-admin", 200)],
)
async def test_permissions(
    api: httpx.AsyncClient, tokens: Tokens, role: str | None, status: int
) -> None:
    webhook_id = (await _create(api, tokens)).json()["id"]
    headers = tokens.headers(role) if role else {}
    for method, path in [
        ("GET", URL),
        ("GET", f"{URL}/{webhook_id}"),
        ("PATCH", f"{URL}/{webhook_id}"),
        ("GET", f"{URL}/{webhook_id}/deliveries"),
    ]:
        kwargs: dict[str, object] = {"json": {"description": "x"}} if method == "PATCH" else {}
        response = await api.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == status, (method, path, response.text)
        if status >= 400:
            assert response.json()["error"]["type"] in ("unauthenticated", "forbidden")
    denied = await api.post(
        URL,
        json={"url": "https://x.example.com", "event_types": ["migration.failed"]},
        headers=tokens.headers("infra-viewer"),
    )
    assert denied.status_code == 403
    assert denied.json()["error"]["details"]["required"] == "webhooks:manage"


async def test_a_delivery_with_temporal_away_is_a_503(settings: Settings, tokens: Tokens) -> None:
    temporal = settings.temporal.model_copy(update={"address": f"127.0.0.1:{free_port()}"})
    async for client in serve(create_app(settings.model_copy(update={"temporal": temporal}))):
        created = await _create(client, tokens)
        assert created.status_code == 201, created.text
        answer = await client.get(
            f"{URL}/{created.json()['id']}/deliveries/evt-1",
            headers=tokens.headers("infra-operator"),
        )
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"]
        error = answer.json()["error"]
        assert (error["type"], error["message"]) == (
            "dependency_unavailable",
            "Temporal did not answer",
        )
        assert error["details"]["dependency"] == "temporal"
