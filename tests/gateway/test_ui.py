"""The dashboard's static files: served under ``/ui`` from the package, public, with a CSP of
their own, and outside the API's route table (they carry no data)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from common.settings import Settings
from gateway.app import create_app
from gateway.routers.ui import UI_DIR
from gateway.routes import iter_api_routes

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = Settings(
    _env_file=None,
    auth={"issuer_url": "https://sso.example.com/realms/acme", "client_secret": "s3cr3t-value"},
    temporal={"ui_url": "https://temporal.example.com/"},
)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # No lifespan: the static routes need neither Temporal nor the catalog.
    transport = httpx.ASGITransport(app=create_app(SETTINGS))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        yield http


async def test_the_page_and_its_assets_are_served_without_a_token(
    client: httpx.AsyncClient,
) -> None:
    moved = await client.get("/ui")
    assert moved.status_code == 308
    assert moved.headers["location"] == "/ui/"
    index = await client.get("/ui/")
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    assert '<script src="app.js" defer></script>' in index.text
    for asset, kind in (("app.js", "javascript"), ("app.css", "text/css")):
        answer = await client.get(f"/ui/{asset}")
        assert answer.status_code == 200, asset
        assert kind in answer.headers["content-type"]
        assert answer.headers["cache-control"] == "no-cache"
    assert (await client.get("/ui/missing.js")).status_code == 404


async def test_the_page_has_its_own_strict_csp_and_the_api_keeps_its_own(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/ui/")
    [csp] = page.headers.get_list("content-security-policy")
    assert "script-src 'self';" in csp
    assert "style-src 'self';" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    # Its API calls, and the PKCE code exchange with the realm.
    assert "connect-src 'self' https://sso.example.com;" in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    api = await client.get("/health")
    assert api.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"


async def test_the_config_names_the_realm_and_the_temporal_ui_and_nothing_secret(
    client: httpx.AsyncClient,
) -> None:
    config = (await client.get("/ui/config.json")).json()
    assert config == {
        "issuer": "https://sso.example.com/realms/acme",
        "authorization_endpoint": "https://sso.example.com/realms/acme/protocol/openid-connect/auth",
        "token_endpoint": "https://sso.example.com/realms/acme/protocol/openid-connect/token",
        "client_id": "tenantflow-ui",
        "temporal_ui_url": "https://temporal.example.com",
        "temporal_namespace": "default",
    }
    assert "s3cr3t" not in json.dumps(config)


def test_the_dev_profile_links_to_the_dev_servers_temporal_ui() -> None:
    from gateway.routers.ui import temporal_ui_url

    dev = Settings(_env_file=None, temporal={"address": "127.0.0.1:7233"})
    assert temporal_ui_url(dev) == "http://127.0.0.1:8233"


def test_the_dashboard_is_not_part_of_the_api_route_table() -> None:
    """The permission check covers API routes; the dashboard is files and a public config."""
    paths = {path for path, _ in iter_api_routes(create_app(SETTINGS))}
    assert not any(path.startswith("/ui") for path in paths)


def test_the_assets_are_package_data_with_no_third_party_code() -> None:
    assert sorted(p.name for p in UI_DIR.iterdir()) == ["app.css", "app.js", "index.html"]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"gateway" = ["ui/*"]' in pyproject
    for asset in UI_DIR.iterdir():
        text = asset.read_text()
        assert "http://" not in text.replace("http://www.w3.org", "")
        assert "https://" not in text, f"{asset.name} loads something from elsewhere"


def test_the_script_never_puts_the_token_in_a_url_or_renders_html() -> None:
    script = (UI_DIR / "app.js").read_text()
    assert "innerHTML" not in script and "outerHTML" not in script
    # Server-Sent Events come through fetch() with the Authorization header.
    assert "new EventSource" not in script
    assert "sessionStorage" in script and "localStorage" not in script
    assert "access_token=" not in script and "token=" not in script


def test_the_realm_has_a_public_pkce_client_for_the_dashboard() -> None:
    realm = json.loads((ROOT / "deploy" / "keycloak" / "tenantflow-realm.json").read_text())
    [client] = [c for c in realm["clients"] if c["clientId"] == SETTINGS.auth.ui_client_id]
    assert client["publicClient"] is True and "secret" not in client
    assert client["standardFlowEnabled"] is True
    assert client["implicitFlowEnabled"] is False
    assert client["directAccessGrantsEnabled"] is False
    assert client["attributes"]["pkce.code.challenge.method"] == "S256"
    assert all(uri.endswith("/ui/") for uri in client["redirectUris"])
    [audience] = client["protocolMappers"]
    assert audience["config"]["included.client.audience"] == SETTINGS.auth.audience
