"""Acceptance: a target's password never appears in plaintext in the catalog tables, API
responses or an exported Temporal history, and with the codec on every payload is encrypted.
(The logs of the whole run are scanned for the same secrets by ``tests/conftest.py``.)
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from cli.stack import EmbeddedPostgres
from cli.temporal_server import TemporalDevServer, temporal_binary
from common.settings import Settings
from gateway.app import create_app
from tests.conftest import TargetDatabase, Tokens, make_settings, serve
from worker.main import run_worker

ENCRYPTED = base64.b64encode(b"binary/encrypted").decode()


@pytest.fixture
async def encrypted_stack(
    postgres: EmbeddedPostgres, temporal_server: TemporalDevServer, settings: Settings
) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    """Gateway and worker with payload encryption on, on a task queue of their own."""
    own = make_settings(
        postgres,
        temporal_server.address,
        auth=settings.auth,
        crypto={"encrypt_payloads": True},
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(own, stop=stop, install_signal_handlers=False))
    try:
        async for client in serve(create_app(own)):
            yield client, own
    finally:
        stop.set()
        await asyncio.wait_for(worker, 60)


async def _output(args: list[str]) -> str:
    """Run a command off the event loop and return its standard output."""
    result = await asyncio.to_thread(
        subprocess.run, args, capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout


def _payloads(node: Any) -> list[dict[str, Any]]:
    """Every Payload object (a dict with metadata and data) anywhere in an exported history."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if "metadata" in node and "data" in node:
            found.append(node)
        for value in node.values():
            found += _payloads(value)
    elif isinstance(node, list):
        for value in node:
            found += _payloads(value)
    return found


async def test_password_never_leaves_in_plaintext(
    encrypted_stack: tuple[httpx.AsyncClient, Settings],
    target_database: TargetDatabase,
    tokens: Tokens,
    postgres: EmbeddedPostgres,
    temporal_server: TemporalDevServer,
) -> None:
    api, settings = encrypted_stack
    secret = target_database.password
    responses: list[httpx.Response] = []

    created = await api.post(
        "/api/v1/databases",
        json=target_database.create_body(),
        headers=tokens.headers("infra-operator"),
    )
    responses.append(created)
    assert created.status_code == 201
    database_id = created.json()["id"]
    viewer = tokens.headers("infra-viewer")
    responses.append(await api.get(f"/api/v1/databases/{database_id}", headers=viewer))
    responses.append(await api.get("/api/v1/databases", headers=viewer))
    tested = await api.post(f"/api/v1/databases/{database_id}/test-connection", headers=viewer)
    responses.append(tested)
    assert tested.json()["ok"] is True, tested.text
    workflow_id = tested.json()["workflow_id"]

    # 1. API responses.
    for response in responses:
        assert secret not in response.text

    # 2. Catalog tables: a full data dump of the catalog database.
    dump = await _output(
        [
            str(EmbeddedPostgres.bin_dir() / "pg_dump"),
            "--data-only",
            "--dbname",
            settings.catalog.dsn.get_secret_value(),
        ],
    )
    assert database_id in dump
    assert "tf1:" in dump
    assert secret not in dump

    # 3. The exported Temporal history, as an operator would export it.
    exported = await _output(
        [
            temporal_binary(),
            "workflow",
            "show",
            "--workflow-id",
            workflow_id,
            "--address",
            temporal_server.address,
            "--output",
            "json",
        ],
    )
    assert secret not in exported
    payloads = _payloads(json.loads(exported))
    assert len(payloads) >= 4  # workflow input/result, activity input/result
    for payload in payloads:
        assert payload["metadata"]["encoding"] == ENCRYPTED
        assert secret.encode() not in base64.b64decode(payload["data"])
        assert database_id.encode() not in base64.b64decode(payload["data"])

    # 4. The Web UI's codec endpoint decodes them, for authorised callers only.
    body = {"payloads": payloads[:1]}
    decoded = await api.post("/codec/decode", json=body, headers=viewer)
    assert decoded.status_code == 200, decoded.text
    plain = base64.b64decode(decoded.json()["payloads"][0]["data"])
    assert database_id.encode() in plain
    assert secret.encode() not in plain
    anonymous = await api.post("/codec/decode", json=body)
    assert anonymous.status_code == 401
    no_roles = {"Authorization": f"Bearer {tokens.issuer.mint(subject='nobody', roles=[])}"}
    forbidden = await api.post("/codec/decode", json=body, headers=no_roles)
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["details"]["required"] == "monitoring:read"

    # Encoding round-trips through the same endpoint family.
    raw = {
        "payloads": [
            {
                "metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
                "data": base64.b64encode(b'{"x": 1}').decode(),
            }
        ]
    }
    encoded = await api.post("/codec/encode", json=raw, headers=tokens.headers("infra-operator"))
    assert encoded.status_code == 200
    assert encoded.json()["payloads"][0]["metadata"]["encoding"] == ENCRYPTED
    assert uuid.UUID(database_id)


async def test_codec_endpoints_say_when_encryption_is_off(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    response = await api.post(
        "/codec/decode", json={"payloads": []}, headers=tokens.headers("infra-viewer")
    )
    assert response.status_code == 400
    assert "encryption is off" in response.json()["error"]["message"]
