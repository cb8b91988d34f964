"""The local Keycloak-shaped issuer: persistent keys, private files, Keycloak's documents and
errors, and ``tenantflow token``."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import HTTPException

from cli.dev_issuer import API_CLIENT, CLI_CLIENT, UI_CLIENT, DevIssuer, dev_issuer_url
from cli.dev_issuer_app import create_issuer_app
from common.settings import DEV_ISSUER_PORT, DEV_KEY_ID_PREFIX, DEV_REALM

PROJECT = Path(__file__).resolve().parents[2]
URL = dev_issuer_url(DEV_ISSUER_PORT)
OIDC = f"/realms/{DEV_REALM}/protocol/openid-connect"


@pytest.fixture
def issuer(tmp_path: Path) -> DevIssuer:
    return DevIssuer(tmp_path / "issuer", URL)


@pytest.fixture
async def http(issuer: DevIssuer) -> AsyncIterator[httpx.AsyncClient]:
    """The issuer's own HTTP app, in process."""
    transport = httpx.ASGITransport(app=create_issuer_app(issuer, DEV_REALM))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:18080") as client:
        yield client


def verify(token: str, jwks: dict[str, Any], audience: str = API_CLIENT) -> dict[str, Any]:
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(jwt.PyJWK(k) for k in jwks["keys"] if k["kid"] == kid)
    claims: dict[str, Any] = jwt.decode(
        token, key=key, algorithms=["RS256"], audience=audience, issuer=URL
    )
    return claims


# -- keys and files -----------------------------------------------------------------------------
def test_keys_and_secrets_persist_across_instances(tmp_path: Path) -> None:
    first = DevIssuer(tmp_path / "issuer", URL)
    second = DevIssuer(tmp_path / "issuer", URL)
    assert [k["kid"] for k in first.jwks()["keys"]] == [k["kid"] for k in second.jwks()["keys"]]
    assert len(first.jwks()["keys"]) == 1
    assert first.client_secret() == second.client_secret()
    assert first.user_password("admin") == second.user_password("admin")
    # A token of one instance verifies with the other's published keys.
    claims = verify(first.mint(subject="s", roles=["infra-viewer"]), second.jwks())
    assert claims["sub"] == "s"


def test_another_directory_is_another_realm(tmp_path: Path) -> None:
    one = DevIssuer(tmp_path / "one", URL)
    two = DevIssuer(tmp_path / "two", URL)
    assert one.jwks()["keys"][0]["kid"] != two.jwks()["keys"][0]["kid"]
    assert one.client_secret() != two.client_secret()


def test_private_files_are_mode_0600(issuer: DevIssuer) -> None:
    issuer.rotate()
    files = sorted(p for p in issuer.data_dir.rglob("*") if p.is_file())
    assert len(files) == 3  # two keys and the secrets
    assert {p.name for p in files} >= {"secrets.json"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_key_ids_carry_the_dev_prefix_and_publish_only_public_parts(issuer: DevIssuer) -> None:
    (key,) = issuer.jwks()["keys"]
    assert key["kid"].startswith(DEV_KEY_ID_PREFIX)
    assert (key["kty"], key["use"], key["alg"]) == ("RSA", "sig", "RS256")
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


def test_rotation_adds_a_key_that_signs_from_now_on(issuer: DevIssuer) -> None:
    old = issuer.mint(subject="s", roles=[])
    new_kid = issuer.rotate()
    new = issuer.mint(subject="s", roles=[])
    assert jwt.get_unverified_header(new)["kid"] == new_kid
    assert jwt.get_unverified_header(old)["kid"] != new_kid
    jwks = issuer.jwks()
    assert len(jwks["keys"]) == 2
    verify(old, jwks)
    verify(new, jwks)


def test_minted_token_is_shaped_like_keycloaks(issuer: DevIssuer) -> None:
    token = issuer.mint(
        subject="u1",
        roles=["infra-operator"],
        username="olga",
        client_roles={API_CLIENT: ["infra-viewer"]},
    )
    claims = verify(token, issuer.jwks())
    assert claims["iss"] == URL
    assert claims["aud"] == [API_CLIENT, "account"]
    assert claims["azp"] == CLI_CLIENT
    assert claims["preferred_username"] == "olga"
    assert claims["realm_access"] == {"roles": ["infra-operator"]}
    assert claims["resource_access"] == {API_CLIENT: {"roles": ["infra-viewer"]}}
    assert claims["exp"] - claims["iat"] == 3600
    assert jwt.get_unverified_header(token)["alg"] == "RS256"


# -- HTTP: discovery, JWKS, token endpoint ------------------------------------------------------
async def test_discovery_document(http: httpx.AsyncClient, issuer: DevIssuer) -> None:
    response = await http.get(f"/realms/{DEV_REALM}/.well-known/openid-configuration")
    assert response.status_code == 200
    assert response.json() == {
        "issuer": URL,
        "jwks_uri": f"{URL}/protocol/openid-connect/certs",
        "token_endpoint": f"{URL}/protocol/openid-connect/token",
        "authorization_endpoint": f"{URL}/protocol/openid-connect/auth",
        "device_authorization_endpoint": f"{URL}/protocol/openid-connect/auth/device",
        "end_session_endpoint": f"{URL}/protocol/openid-connect/logout",
        "grant_types_supported": [
            "client_credentials",
            "password",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code",
            "authorization_code",
        ],
        "code_challenge_methods_supported": ["S256"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }
    certs = await http.get(f"{OIDC}/certs")
    assert certs.json() == issuer.jwks()


async def test_served_over_real_http(dev_issuer: DevIssuer) -> None:
    """The session's issuer answers on its port with its own issuer URL."""
    async with httpx.AsyncClient() as client:
        discovery = (
            await client.get(f"{dev_issuer.issuer_url}/.well-known/openid-configuration")
        ).json()
        certs = (await client.get(discovery["jwks_uri"])).json()
    assert discovery["issuer"] == dev_issuer.issuer_url
    assert certs == dev_issuer.jwks()


async def test_password_grant_over_http(http: httpx.AsyncClient, issuer: DevIssuer) -> None:
    response = await http.post(
        f"{OIDC}/token",
        data={
            "grant_type": "password",
            "client_id": CLI_CLIENT,
            "username": "operator",
            "password": issuer.user_password("operator"),
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    claims = verify(body["access_token"], issuer.jwks())
    assert claims["preferred_username"] == "operator"
    assert claims["realm_access"]["roles"] == ["infra-operator"]


async def test_client_credentials_grant_over_http(
    http: httpx.AsyncClient, issuer: DevIssuer
) -> None:
    response = await http.post(
        f"{OIDC}/token",
        data={
            "grant_type": "client_credentials",
            "client_id": API_CLIENT,
            "client_secret": issuer.client_secret(),
        },
    )
    assert response.status_code == 200, response.text
    claims = verify(response.json()["access_token"], issuer.jwks())
    assert claims["sub"] == f"service-account-{API_CLIENT}"
    assert claims["azp"] == API_CLIENT


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        (
            {"grant_type": "password", "client_id": CLI_CLIENT, "username": "viewer"},
            401,
            "invalid_grant",
        ),
        (
            {"grant_type": "password", "client_id": CLI_CLIENT, "username": "nobody"},
            401,
            "invalid_grant",
        ),
        (
            {"grant_type": "client_credentials", "client_id": API_CLIENT, "client_secret": "no"},
            401,
            "unauthorized_client",
        ),
        ({"grant_type": "client_credentials", "client_id": CLI_CLIENT}, 401, "unauthorized_client"),
        ({"grant_type": "password", "client_id": "stranger"}, 401, "invalid_client"),
        (
            {"grant_type": "authorization_code", "client_id": CLI_CLIENT},
            400,
            "unsupported_grant_type",
        ),
    ],
    ids=[
        "wrong-password",
        "unknown-user",
        "wrong-client-secret",
        "public-client-credentials",
        "unknown-client",
        "unsupported-grant",
    ],
)
async def test_grant_errors_look_like_keycloaks(
    http: httpx.AsyncClient,
    issuer: DevIssuer,
    form: dict[str, str],
    status: int,
    error: str,
) -> None:
    if form.get("username") == "viewer":
        form = {**form, "password": "not-" + issuer.user_password("viewer")}
    # Directly: an HTTPException carrying the OAuth error body.
    with pytest.raises(HTTPException) as raised:
        issuer.grant(form)
    assert raised.value.status_code == status
    detail: dict[str, str] = raised.value.detail  # type: ignore[assignment]
    assert detail["error"] == error
    # Over HTTP: the bare OAuth error document, as Keycloak answers.
    response = await http.post(f"{OIDC}/token", data=form)
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == error


# -- refresh tokens, logout, device login -------------------------------------------------------
async def _password_login(http: httpx.AsyncClient, issuer: DevIssuer) -> dict[str, Any]:
    response = await http.post(
        f"{OIDC}/token",
        data={
            "grant_type": "password",
            "client_id": CLI_CLIENT,
            "username": "viewer",
            "password": issuer.user_password("viewer"),
        },
    )
    assert response.status_code == 200, response.text
    issued: dict[str, Any] = response.json()
    return issued


async def test_refresh_tokens_continue_the_session_until_logout(
    http: httpx.AsyncClient, issuer: DevIssuer
) -> None:
    issued = await _password_login(http, issuer)
    assert issued["refresh_expires_in"] == 1800
    first = verify(issued["access_token"], issuer.jwks())
    refresh = {"grant_type": "refresh_token", "client_id": CLI_CLIENT}
    renewed = await http.post(
        f"{OIDC}/token", data={**refresh, "refresh_token": issued["refresh_token"]}
    )
    assert renewed.status_code == 200, renewed.text
    second = verify(renewed.json()["access_token"], issuer.jwks())
    assert (second["sid"], second["preferred_username"]) == (first["sid"], "viewer")
    # Another client cannot use it.
    stolen = await http.post(
        f"{OIDC}/token",
        data={
            **refresh,
            "client_id": API_CLIENT,
            "client_secret": issuer.client_secret(),
            "refresh_token": issued["refresh_token"],
        },
    )
    assert (stolen.status_code, stolen.json()["error"]) == (400, "invalid_grant")
    # Logout ends every refresh token of the session.
    ended = await http.post(
        f"{OIDC}/logout", data={"client_id": CLI_CLIENT, "refresh_token": issued["refresh_token"]}
    )
    assert ended.status_code == 204
    for token in (issued["refresh_token"], renewed.json()["refresh_token"]):
        refused = await http.post(f"{OIDC}/token", data={**refresh, "refresh_token": token})
        assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
    again = await http.post(
        f"{OIDC}/logout", data={"client_id": CLI_CLIENT, "refresh_token": issued["refresh_token"]}
    )
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")


async def test_sessions_survive_a_restart_and_keep_no_refresh_token(
    http: httpx.AsyncClient, issuer: DevIssuer
) -> None:
    issued = await _password_login(http, issuer)
    sessions = issuer.data_dir / "sessions.json"
    assert stat.S_IMODE(sessions.stat().st_mode) == 0o600
    assert issued["refresh_token"] not in sessions.read_text()
    restarted = DevIssuer(issuer.data_dir, URL)
    renewed = restarted.grant(
        {
            "grant_type": "refresh_token",
            "client_id": CLI_CLIENT,
            "refresh_token": issued["refresh_token"],
        }
    )
    assert verify(renewed["access_token"], issuer.jwks())["preferred_username"] == "viewer"


async def test_device_login_on_the_verification_page(
    http: httpx.AsyncClient, issuer: DevIssuer
) -> None:
    started = await http.post(f"{OIDC}/auth/device", data={"client_id": CLI_CLIENT})
    assert started.status_code == 200, started.text
    device = started.json()
    assert set(device) == {
        "device_code",
        "user_code",
        "verification_uri",
        "verification_uri_complete",
        "expires_in",
        "interval",
    }
    assert device["verification_uri"] == f"{URL}/device"
    poll = {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "client_id": CLI_CLIENT,
        "device_code": device["device_code"],
    }
    pending = await http.post(f"{OIDC}/token", data=poll)
    assert (pending.status_code, pending.json()["error"]) == (400, "authorization_pending")
    page = await http.get(f"/realms/{DEV_REALM}/device", params={"user_code": device["user_code"]})
    assert page.status_code == 200 and device["user_code"] in page.text
    form = {"user_code": device["user_code"], "username": "operator"}
    wrong = await http.post(f"/realms/{DEV_REALM}/device", data={**form, "password": "nope"})
    assert wrong.status_code == 401
    unknown = await http.post(
        f"/realms/{DEV_REALM}/device",
        data={**form, "user_code": "BBBB-BBBB", "password": issuer.user_password("operator")},
    )
    assert unknown.status_code == 400
    right = await http.post(
        f"/realms/{DEV_REALM}/device", data={**form, "password": issuer.user_password("operator")}
    )
    assert right.status_code == 200, right.text
    issued = await http.post(f"{OIDC}/token", data=poll)
    assert issued.status_code == 200, issued.text
    claims = verify(issued.json()["access_token"], issuer.jwks())
    assert claims["realm_access"]["roles"] == ["infra-operator"]
    spent = await http.post(f"{OIDC}/token", data=poll)
    assert (spent.status_code, spent.json()["error"]) == (400, "invalid_grant")


# -- tenantflow token ---------------------------------------------------------------------------
def _tenantflow(
    args: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TENANTFLOW_")}
    clean.update(env, PYTHONPATH=str(PROJECT))
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=clean,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_token_command_prints_a_jwt_that_verifies(tmp_path: Path) -> None:
    DevIssuer(tmp_path / "issuer", URL)  # the stack's data, as `tenantflow dev` leaves it
    result = _tenantflow(
        ["token", "--role", "infra-operator"], {"TENANTFLOW_DEV__DATA_DIR": str(tmp_path)}, tmp_path
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.count(".") == 2
    issuer = DevIssuer(tmp_path / "issuer", URL)
    claims = verify(token, issuer.jwks())
    assert claims["realm_access"] == {"roles": ["infra-operator"]}
    assert claims["sub"] == "dev-infra-operator"
    assert jwt.get_unverified_header(token)["kid"].startswith(DEV_KEY_ID_PREFIX)
    for path in (tmp_path / "issuer").rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_token_command_is_refused_in_production(tmp_path: Path) -> None:
    result = _tenantflow(
        ["token", "--role", "infra-admin"],
        {"TENANTFLOW_DEV__DATA_DIR": str(tmp_path), "TENANTFLOW_PROFILE": "production"},
        tmp_path,
    )
    assert result.returncode != 0
    assert "eyJ" not in result.stdout
    assert not (tmp_path / "issuer").exists()


def test_token_command_is_refused_by_an_otherwise_valid_production_config(tmp_path: Path) -> None:
    """Not only because the dev defaults are refused: the command itself refuses production."""
    env = {
        "TENANTFLOW_DEV__DATA_DIR": str(tmp_path),
        "TENANTFLOW_PROFILE": "production",
        "TENANTFLOW_CATALOG__DSN": "postgresql://tf:secret@db.example.com/tenantflow",
        "TENANTFLOW_LOG__FORMAT": "json",
        "TENANTFLOW_AUTH__ISSUER_URL": "https://keycloak.example.com/realms/tenantflow",
        "TENANTFLOW_CRYPTO__KEYS": '{"prod": "' + base64.b64encode(b"k" * 32).decode() + '"}',
        "TENANTFLOW_CRYPTO__ACTIVE_KEY_ID": "prod",
    }
    result = _tenantflow(["token"], env, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "dev issuer does not exist in production" in result.stderr
    assert "eyJ" not in result.stdout
    assert not (tmp_path / "issuer").exists()


# -- authorization code with PKCE (the dashboard) ----------------------------------------------
async def test_code_flow_with_pkce_signs_in_once_for_the_verifier(
    http: httpx.AsyncClient, issuer: DevIssuer
) -> None:
    verifier = "v" * 50
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    )
    redirect = "http://127.0.0.1:8000/ui/"
    query = {
        "client_id": UI_CLIENT,
        "response_type": "code",
        "redirect_uri": redirect,
        "scope": "openid",
        "state": "s-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    page = await http.get(f"{OIDC}/auth", params=query)
    assert page.status_code == 200 and 'name="password"' in page.text
    wrong = await http.post(f"{OIDC}/auth", data={**query, "username": "viewer", "password": "x"})
    assert wrong.status_code == 401 and "Invalid user credentials" in wrong.text
    password = issuer.user_password("viewer")
    signed = await http.post(
        f"{OIDC}/auth", data={**query, "username": "viewer", "password": password}
    )
    assert signed.status_code == 302
    location = httpx.URL(signed.headers["location"])
    assert str(location).startswith(redirect) and location.params["state"] == "s-1"
    code = location.params["code"]
    exchange = {
        "grant_type": "authorization_code",
        "client_id": UI_CLIENT,
        "code": code,
        "redirect_uri": redirect,
        "code_verifier": verifier,
    }
    cross = {"Origin": "http://127.0.0.1:8000"}
    refused = await http.post(
        f"{OIDC}/token", data={**exchange, "code_verifier": "w" * 50}, headers=cross
    )
    assert refused.status_code == 400
    assert refused.json()["error_description"] == "PKCE verification failed"
    # The code died with the failed attempt, as in Keycloak: sign in again.
    signed = await http.post(
        f"{OIDC}/auth", data={**query, "username": "viewer", "password": password}
    )
    exchange["code"] = httpx.URL(signed.headers["location"]).params["code"]
    issued = await http.post(f"{OIDC}/token", data=exchange, headers=cross)
    assert issued.status_code == 200
    assert issued.headers["access-control-allow-origin"] == "http://127.0.0.1:8000"
    claims = verify(issued.json()["access_token"], issuer.jwks())
    assert (claims["azp"], claims["preferred_username"]) == (UI_CLIENT, "viewer")
    again = await http.post(f"{OIDC}/token", data=exchange)
    assert again.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"client_id": CLI_CLIENT}, "invalid_client"),
        ({"redirect_uri": "https://evil.example.com/ui/"}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
    ],
)
async def test_code_flow_refuses_before_showing_a_login_page(
    http: httpx.AsyncClient, change: dict[str, str], error: str
) -> None:
    query = {
        "client_id": UI_CLIENT,
        "response_type": "code",
        "redirect_uri": "http://localhost:8000/ui/",
        "code_challenge": "c" * 43,
        "code_challenge_method": "S256",
    }
    answer = await http.get(f"{OIDC}/auth", params={**query, **change})
    assert answer.status_code == 400
    assert answer.json()["error"] == error
