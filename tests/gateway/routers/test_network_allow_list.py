"""The network allow-list through HTTP: registrations on refused networks get 422
``network_refused``; the setting lifts the refusal; a worker refuses at connection time."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from common import network_policy
from common.settings import NetworkSettings, Settings
from gateway.app import create_app
from tests.conftest import TargetDatabase, Tokens, serve
from tests.gateway.routers.test_servers import server_body

DATABASES = "/api/v1/databases"
SERVERS = "/api/v1/servers"
DENIED = "TENANTFLOW_NETWORK__DENIED_NETWORKS"
ALLOWED = "TENANTFLOW_NETWORK__ALLOWED_NETWORKS"


def _refused(response: httpx.Response, host: str, setting: str = DENIED) -> dict[str, object]:
    assert response.status_code == 422, response.text
    error: dict[str, object] = response.json()["error"]
    assert error["type"] == "network_refused"
    assert host in str(error["message"])
    assert setting in str(error["message"])
    details = error["details"]
    assert isinstance(details, dict)
    assert details["host"] == host
    assert details["setting"] == setting
    return error


@pytest.fixture
async def permissive(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway whose operator allowed the link-local network explicitly."""
    network = NetworkSettings.model_validate(
        {"allowed_networks": ["0.0.0.0/0", "::/0", "169.254.0.0/16"]}
    )
    async for client in serve(create_app(settings.model_copy(update={"network": network}))):
        yield client


async def test_a_database_on_the_metadata_address_is_refused_then_allowed_by_the_setting(
    api: httpx.AsyncClient,
    permissive: httpx.AsyncClient,
    tokens: Tokens,
    target_database: TargetDatabase,
) -> None:
    operator = tokens.headers("infra-operator")
    body = target_database.create_body(name=f"meta-{uuid.uuid4().hex[:8]}", host="169.254.169.254")
    refused = await api.post(DATABASES, json=body, headers=operator)
    error = _refused(refused, "169.254.169.254")
    assert error["details"] == {
        "host": "169.254.169.254",
        "address": "169.254.169.254",
        "network": "169.254.0.0/16",
        "setting": DENIED,
    }
    assert target_database.password not in refused.text
    listed = await api.get(DATABASES, params={"limit": 1000}, headers=operator)
    assert body["name"] not in {d["name"] for d in listed.json()["items"]}

    allowed = await permissive.post(DATABASES, json=body, headers=operator)
    assert allowed.status_code == 201, allowed.text
    assert allowed.json()["host"] == "169.254.169.254"
    deleted = await permissive.delete(f"{DATABASES}/{allowed.json()['id']}", headers=operator)
    assert deleted.status_code == 204


@pytest.mark.parametrize(
    "host",
    ["fe80::1", "fd00:ec2::254", "::ffff:a9fe:a9fe", "100.100.100.200", "0.0.0.0"],  # noqa: S104
)
async def test_other_link_local_and_metadata_hosts_are_refused(
    api: httpx.AsyncClient, tokens: Tokens, target_database: TargetDatabase, host: str
) -> None:
    body = target_database.create_body(name=f"meta-{uuid.uuid4().hex[:8]}", host=host)
    response = await api.post(DATABASES, json=body, headers=tokens.headers("infra-operator"))
    _refused(response, host)


@pytest.mark.parametrize("host", ["2852039166", "0251.0376.0251.0376", "169.254.43518"])
async def test_numeric_spellings_of_an_address_are_invalid(
    api: httpx.AsyncClient, tokens: Tokens, target_database: TargetDatabase, host: str
) -> None:
    body = target_database.create_body(name=f"num-{uuid.uuid4().hex[:8]}", host=host)
    response = await api.post(DATABASES, json=body, headers=tokens.headers("infra-operator"))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["type"] == "validation_error"


async def test_changing_a_database_host_onto_a_refused_network_is_refused(
    api: httpx.AsyncClient, tokens: Tokens, target_database: TargetDatabase
) -> None:
    operator = tokens.headers("infra-operator")
    body = target_database.create_body(name=f"move-{uuid.uuid4().hex[:8]}")
    created = await api.post(DATABASES, json=body, headers=operator)
    assert created.status_code == 201, created.text
    url = f"{DATABASES}/{created.json()['id']}"
    _refused(
        await api.patch(url, json={"host": "fe80::a9fe:a9fe"}, headers=operator), "fe80::a9fe:a9fe"
    )
    assert (await api.get(url, headers=operator)).json()["host"] == target_database.host
    moved = await api.patch(url, json={"host": "db.example.internal"}, headers=operator)
    assert moved.status_code == 200, moved.text
    assert (await api.delete(url, headers=operator)).status_code == 204


async def test_servers_on_refused_networks_are_refused(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    operator = tokens.headers("infra-operator")
    refused = await api.post(SERVERS, json=server_body(host="169.254.169.254"), headers=operator)
    _refused(refused, "169.254.169.254")

    body = server_body()
    assert (await api.post(SERVERS, json=body, headers=operator)).status_code == 201
    url = f"{SERVERS}/{body['name']}"
    _refused(
        await api.patch(url, json={"host": "fd00:ec2::254"}, headers=operator), "fd00:ec2::254"
    )
    assert (await api.get(url, headers=operator)).json()["host"] == "pg.internal"
    assert (await api.delete(url, headers=operator)).status_code == 204


async def test_a_tenant_is_not_placed_on_a_server_the_allow_list_now_refuses(
    api: httpx.AsyncClient, permissive: httpx.AsyncClient, tokens: Tokens
) -> None:
    operator = tokens.headers("infra-operator")
    # Registered while the link-local network was allowed; the default gateway refuses it now.
    body = server_body(host="169.254.10.20")
    created = await permissive.post(SERVERS, json=body, headers=operator)
    assert created.status_code == 201, created.text
    tenant = {"tenant_id": f"np{uuid.uuid4().hex[:8]}", "server": body["name"], "sets": []}
    refused = await api.post("/api/v1/tenants", json=tenant, headers=tokens.headers("infra-admin"))
    _refused(refused, "169.254.10.20")
    listed = await api.get("/api/v1/tenants", headers=operator)
    assert tenant["tenant_id"] not in {t["tenant_id"] for t in listed.json()["items"]}
    assert (
        await permissive.delete(f"{SERVERS}/{body['name']}", headers=operator)
    ).status_code == 204


@pytest.fixture
def worker_refuses_loopback() -> Iterator[None]:
    """The session's worker (this process) refuses loopback addresses for one test."""
    network_policy.configure(
        NetworkSettings.model_validate({"denied_networks": ["127.0.0.0/8", "::1/128"]})
    )
    yield
    network_policy.configure(None)


async def test_a_worker_refuses_a_name_that_resolves_into_a_refused_network(
    api: httpx.AsyncClient,
    tokens: Tokens,
    target_database: TargetDatabase,
    worker_refuses_loopback: None,
) -> None:
    operator = tokens.headers("infra-operator")
    # A name passes registration (it is resolved where the connection is made).
    body = target_database.create_body(name=f"dns-{uuid.uuid4().hex[:8]}", host="localhost")
    created = await api.post(DATABASES, json=body, headers=operator)
    assert created.status_code == 201, created.text
    url = f"{DATABASES}/{created.json()['id']}"
    tested = await api.post(f"{url}/test-connection", headers=operator)
    assert tested.status_code == 200, tested.text
    result = tested.json()
    assert result["ok"] is False
    assert "'localhost' resolves to" in result["error"]
    assert DENIED in result["error"]
    assert target_database.password not in tested.text
    assert (await api.delete(url, headers=operator)).status_code == 204
