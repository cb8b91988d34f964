"""Bearer-token validation through HTTP (``GET /api/v1/auth/me``), against the real dev issuer.

Every forged, stale or misdirected token is refused with 401, the error envelope and a
``WWW-Authenticate: Bearer ...`` challenge; key rotation needs no restart; roles map to permissions;
the production profile refuses the development issuer and its keys.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from pydantic import ValidationError

from cli.dev_issuer import DevIssuer
from cli.dev_issuer_app import create_issuer_app
from cli.stack import EmbeddedPostgres, free_port
from cli.temporal_server import TemporalDevServer
from common.settings import (
    DEV_ISSUER_URL,
    DEV_KEY_ID_PREFIX,
    DEV_REALM,
    AuthSettings,
    Settings,
    production_problems,
)
from gateway.app import create_app
from gateway.auth import tokens as token_module
from gateway.auth.jwks import JwksCache
from gateway.auth.tokens import InvalidToken, TokenValidator, roles_from_claims
from models.auth import ADMIN_PERMISSIONS, OPERATOR_PERMISSIONS, VIEWER_PERMISSIONS
from tests.conftest import ThreadedServer, Tokens, make_settings, serve

ME = "/api/v1/auth/me"
# A base64 AES-256 key that is not the development key (the production profile refuses that one).
PRODUCTION_CRYPTO = {
    "keys": {"prod": base64.b64encode(b"p" * 32).decode()},
    "active_key_id": "prod",
}
NO_BRUTE_FORCE_LIMIT = {"failed_auth": "1000/minute"}


# -- helpers ------------------------------------------------------------------------------------
def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unb64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def claims_of(token: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(unb64url(token.split(".")[1]))
    return payload


def kid_of(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


def with_header(token: str, header: dict[str, Any]) -> str:
    """``token`` with its header replaced (payload and signature kept)."""
    return ".".join([b64url_json(header), *token.split(".")[1:]])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_refused(
    response: httpx.Response, error_type: str = "invalid_token", message: str | None = None
) -> None:
    """401, the envelope with ``error_type``, and a Bearer challenge."""
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"]["type"] == error_type
    assert body["request_id"] == response.headers["X-Request-ID"]
    if message is not None:
        assert message in body["error"]["message"]
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer")
    if error_type == "invalid_token":
        assert 'error="invalid_token"' in challenge


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """``serve(app)``, closed (lifespan and all) even when the test fails inside."""
    clients = cast(AsyncGenerator[httpx.AsyncClient, None], serve(app))
    try:
        yield await anext(clients)
    finally:
        await clients.aclose()


def token_settings(
    postgres: EmbeddedPostgres,
    temporal: TemporalDevServer,
    auth: AuthSettings,
    **overrides: object,
) -> Settings:
    return make_settings(
        postgres, temporal.address, auth=auth, rate_limit=NO_BRUTE_FORCE_LIMIT, **overrides
    )


def auth_with(base: AuthSettings, **changes: object) -> AuthSettings:
    """``base`` with ``changes``, validated again."""
    return AuthSettings.model_validate({**base.model_dump(), **changes})


def jwks_fetches(client: httpx.AsyncClient) -> list[str]:
    """Record every JWKS request the app's own HTTP client sends from now on."""
    app = client._transport.app  # type: ignore[attr-defined]
    http: httpx.AsyncClient = app.state.authenticator.validator.jwks._http
    seen: list[str] = []

    async def record(request: httpx.Request) -> None:
        seen.append(str(request.url))

    http.event_hooks = {"request": [record], "response": []}
    return seen


@pytest.fixture
async def gateway(
    postgres: EmbeddedPostgres, temporal_server: TemporalDevServer, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway of its own, with a brute-force limit too high to interfere."""
    async with running(
        create_app(token_settings(postgres, temporal_server, settings.auth))
    ) as client:
        yield client


# -- the valid token ----------------------------------------------------------------------------
async def test_valid_token_shows_subject_roles_and_permissions(
    gateway: httpx.AsyncClient, tokens: Tokens
) -> None:
    response = await gateway.get(ME, headers=bearer(tokens.token("infra-viewer")))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "subject": "user-infra-viewer",
        "username": "user-infra-viewer",
        "client_id": "tenantflow-cli",
        "roles": ["infra-viewer"],
        "permissions": sorted(p.value for p in VIEWER_PERMISSIONS),
        "via": "token",
    }


async def test_expiry_within_the_leeway_is_accepted(
    gateway: httpx.AsyncClient, tokens: Tokens
) -> None:
    token = tokens.token("infra-viewer", exp=int(time.time()) - 10)
    assert (await gateway.get(ME, headers=bearer(token))).status_code == 200


# -- the refusals -------------------------------------------------------------------------------
async def test_expired_token_is_refused(gateway: httpx.AsyncClient, tokens: Tokens) -> None:
    now = int(time.time())
    token = tokens.token("infra-admin", exp=now - 120, iat=now - 3720, nbf=now - 3720)
    assert_refused(await gateway.get(ME, headers=bearer(token)), message="expired")


async def test_token_not_valid_yet_is_refused(gateway: httpx.AsyncClient, tokens: Tokens) -> None:
    token = tokens.token("infra-admin", nbf=int(time.time()) + 600)
    assert_refused(await gateway.get(ME, headers=bearer(token)), message="not valid yet")


async def test_token_of_another_issuer_is_refused(
    gateway: httpx.AsyncClient, tokens: Tokens
) -> None:
    token = tokens.token("infra-admin", iss="https://evil.example.com/realms/tenantflow")
    assert_refused(await gateway.get(ME, headers=bearer(token)), message="issuer")


async def test_token_for_another_audience_is_refused(
    gateway: httpx.AsyncClient, tokens: Tokens
) -> None:
    token = tokens.token("infra-admin", aud=["other-api", "account"], azp="other-client")
    assert_refused(await gateway.get(ME, headers=bearer(token)), message="audience")


async def test_audience_in_azp_alone_is_accepted(
    gateway: httpx.AsyncClient, tokens: Tokens
) -> None:
    token = tokens.token("infra-viewer", aud="account", azp="tenantflow-api")
    assert (await gateway.get(ME, headers=bearer(token))).status_code == 200


@pytest.mark.parametrize("algorithm", ["none", "None", "NONE"])
async def test_unsigned_token_is_refused(
    gateway: httpx.AsyncClient, tokens: Tokens, algorithm: str
) -> None:
    genuine = tokens.token("infra-viewer")
    claims = {**claims_of(genuine), "realm_access": {"roles": ["infra-admin"]}}
    header = {"alg": algorithm, "typ": "JWT", "kid": kid_of(genuine)}
    forged = f"{b64url_json(header)}.{b64url_json(claims)}."
    assert_refused(await gateway.get(ME, headers=bearer(forged)), message="algorithm")


async def test_hs256_signed_with_the_public_key_is_refused(
    gateway: httpx.AsyncClient, tokens: Tokens, dev_issuer: DevIssuer
) -> None:
    """The key-confusion attack: HMAC keyed with the published RSA public key."""
    genuine = tokens.token("infra-viewer")
    kid = kid_of(genuine)
    async with httpx.AsyncClient() as http:
        published = (
            await http.get(f"{dev_issuer.issuer_url}/protocol/openid-connect/certs")
        ).json()
    jwk = next(k for k in published["keys"] if k["kid"] == kid)
    public_key = jwt.PyJWK(jwk).key
    assert isinstance(public_key, rsa.RSAPublicKey)
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {**claims_of(genuine), "realm_access": {"roles": ["infra-admin"]}}
    signing_input = (
        f"{b64url_json({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{b64url_json(claims)}"
    )
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{b64url(signature)}"
    # The forgery is well made: HMAC-SHA256 with the PEM as secret verifies it.
    expected = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    assert hmac.compare_digest(unb64url(forged.split(".")[2]), expected)
    assert_refused(await gateway.get(ME, headers=bearer(forged)), message="algorithm")


async def test_unknown_key_id_is_refused(gateway: httpx.AsyncClient, tokens: Tokens) -> None:
    genuine = tokens.token("infra-admin")
    header = {"alg": "RS256", "typ": "JWT", "kid": DEV_KEY_ID_PREFIX + "0123456789abcdef"}
    forged = with_header(genuine, header)
    assert_refused(await gateway.get(ME, headers=bearer(forged)), message="unknown key")


async def test_token_signed_by_a_key_the_realm_does_not_publish_is_refused(
    gateway: httpx.AsyncClient, tokens: Tokens
) -> None:
    """Same kid as the realm's key, signature by an attacker's RSA key."""
    genuine = tokens.token("infra-viewer")
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        {**claims_of(genuine), "realm_access": {"roles": ["infra-admin"]}},
        attacker,
        algorithm="RS256",
        headers={"kid": kid_of(genuine)},
    )
    assert_refused(await gateway.get(ME, headers=bearer(forged)), message="signature")


async def test_tampered_payload_is_refused(gateway: httpx.AsyncClient, tokens: Tokens) -> None:
    header, payload, signature = tokens.token("infra-viewer").split(".")
    claims = {**json.loads(unb64url(payload)), "realm_access": {"roles": ["infra-admin"]}}
    forged = f"{header}.{b64url_json(claims)}.{signature}"
    assert_refused(await gateway.get(ME, headers=bearer(forged)), message="signature")


@pytest.mark.parametrize("garbage", ["not-a-jwt", "a.b.c", "...", "e30.e30"])
async def test_malformed_token_is_refused(gateway: httpx.AsyncClient, garbage: str) -> None:
    assert_refused(await gateway.get(ME, headers=bearer(garbage)))


async def test_token_without_a_subject_is_refused(
    gateway: httpx.AsyncClient, dev_issuer: DevIssuer
) -> None:
    # Signed with the realm's real key: only the missing ``sub`` is wrong.
    kid, key = dev_issuer._keys()[-1]
    claims = claims_of(dev_issuer.mint(subject="x", roles=["infra-admin"]))
    del claims["sub"]
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})
    assert_refused(await gateway.get(ME, headers=bearer(token)))


async def test_missing_authorization_is_unauthenticated(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get(ME)
    assert_refused(response, error_type="unauthenticated")
    assert "error=" not in response.headers["WWW-Authenticate"]


async def test_basic_authorization_is_refused(gateway: httpx.AsyncClient) -> None:
    basic = base64.b64encode(b"admin:admin").decode()
    response = await gateway.get(ME, headers={"Authorization": f"Basic {basic}"})
    assert_refused(response, message="Bearer")


# The ``alg`` of a refused token is echoed, as repr, into the challenge's error_description.
async def test_non_latin1_algorithm_is_a_401_not_a_500(
    gateway: httpx.AsyncClient, tokens: Tokens
) -> None:
    forged = with_header(tokens.token("infra-viewer"), {"alg": "\u2603", "kid": "k"})
    assert_refused(await gateway.get(ME, headers=bearer(forged)), message="algorithm")


async def test_algorithm_cannot_inject_challenge_parameters(
    gateway: httpx.AsyncClient, tokens: Tokens
) -> None:
    forged = with_header(tokens.token("infra-viewer"), {"alg": 'x", error="evil', "kid": "k"})
    response = await gateway.get(ME, headers=bearer(forged))
    assert_refused(response, message="algorithm")
    challenge = response.headers["WWW-Authenticate"]
    assert re.findall(r"(\w+)=", challenge) == ["realm", "error", "error_description"]


# -- key rotation -------------------------------------------------------------------------------
async def test_rotated_key_is_picked_up_without_a_restart(
    postgres: EmbeddedPostgres,
    temporal_server: TemporalDevServer,
    settings: Settings,
    dev_issuer: DevIssuer,
    tokens: Tokens,
) -> None:
    auth = auth_with(settings.auth, jwks_refresh_min_interval_seconds=0)
    async with running(create_app(token_settings(postgres, temporal_server, auth))) as client:
        fetches = jwks_fetches(client)
        before = tokens.token("infra-viewer")
        assert (await client.get(ME, headers=bearer(before))).status_code == 200
        assert (await client.get(ME, headers=bearer(before))).status_code == 200
        assert len(fetches) == 1  # cached after the first call
        new_kid = dev_issuer.rotate()
        after = tokens.token("infra-viewer")
        assert kid_of(after) == new_kid != kid_of(before)
        response = await client.get(ME, headers=bearer(after))
        assert response.status_code == 200, response.text
        assert len(fetches) == 2  # one refetch for the new key id
        # Older keys stay published: tokens signed before the rotation still verify.
        assert (await client.get(ME, headers=bearer(before))).status_code == 200


async def test_unknown_key_ids_do_not_hammer_the_issuer(
    postgres: EmbeddedPostgres,
    temporal_server: TemporalDevServer,
    settings: Settings,
    dev_issuer: DevIssuer,
    tokens: Tokens,
) -> None:
    """Within ``jwks_refresh_min_interval_seconds`` a new kid is refused without a refetch."""
    auth = auth_with(settings.auth, jwks_refresh_min_interval_seconds=3600)
    async with running(create_app(token_settings(postgres, temporal_server, auth))) as client:
        fetches = jwks_fetches(client)
        assert (await client.get(ME, headers=tokens.headers("infra-viewer"))).status_code == 200
        dev_issuer.rotate()
        rotated = tokens.token("infra-viewer")
        for n in range(20):
            made_up = with_header(rotated, {"alg": "RS256", "kid": f"made-up-{n}"})
            forged = made_up if n % 2 else rotated
            assert_refused(await client.get(ME, headers=bearer(forged)), message="unknown key")
        assert len(fetches) == 1


async def test_new_key_is_accepted_once_the_refresh_interval_has_passed(
    postgres: EmbeddedPostgres,
    temporal_server: TemporalDevServer,
    settings: Settings,
    dev_issuer: DevIssuer,
    tokens: Tokens,
) -> None:
    interval = 1.0
    auth = auth_with(settings.auth, jwks_refresh_min_interval_seconds=interval)
    async with running(create_app(token_settings(postgres, temporal_server, auth))) as client:
        fetches = jwks_fetches(client)
        assert (await client.get(ME, headers=tokens.headers("infra-viewer"))).status_code == 200
        fetched = time.monotonic()
        dev_issuer.rotate()
        rotated = tokens.token("infra-viewer")
        assert_refused(await client.get(ME, headers=bearer(rotated)), message="unknown key")
        assert time.monotonic() - fetched < interval, "the test itself was too slow"
        await _sleep_until(fetched + interval + 0.1)
        assert (await client.get(ME, headers=bearer(rotated))).status_code == 200
        assert len(fetches) == 2


async def _sleep_until(deadline: float) -> None:
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


# -- roles and permissions ----------------------------------------------------------------------
async def test_realm_and_client_roles_give_the_union_of_permissions(
    gateway: httpx.AsyncClient, dev_issuer: DevIssuer
) -> None:
    token = dev_issuer.mint(
        subject="mixed",
        roles=["infra-viewer", "offline_access"],
        client_roles={"tenantflow-api": ["infra-operator"], "account": ["infra-admin"]},
    )
    response = await gateway.get(ME, headers=bearer(token))
    assert response.status_code == 200, response.text
    me = response.json()
    # Roles of other clients (``account``) are not the API's roles.
    assert me["roles"] == ["infra-operator", "infra-viewer", "offline_access"]
    assert me["permissions"] == sorted(p.value for p in OPERATOR_PERMISSIONS)
    assert "admin" not in me["permissions"]


async def test_client_role_alone_grants_its_permissions(
    gateway: httpx.AsyncClient, dev_issuer: DevIssuer
) -> None:
    token = dev_issuer.mint(
        subject="svc", roles=[], client_roles={"tenantflow-api": ["infra-admin"]}
    )
    response = await gateway.get(ME, headers=bearer(token))
    assert response.json()["permissions"] == sorted(p.value for p in ADMIN_PERMISSIONS)


async def test_role_permissions_setting_changes_the_mapping(
    postgres: EmbeddedPostgres,
    temporal_server: TemporalDevServer,
    settings: Settings,
    dev_issuer: DevIssuer,
) -> None:
    auth = auth_with(
        settings.auth,
        role_permissions={
            "auditor": ["monitoring:read"],
            "deployer": ["migrations:execute", "migrations:read"],
        },
    )
    token = dev_issuer.mint(
        subject="custom",
        roles=["auditor", "infra-admin"],
        client_roles={"tenantflow-api": ["deployer"]},
    )
    async with running(create_app(token_settings(postgres, temporal_server, auth))) as client:
        me = (await client.get(ME, headers=bearer(token))).json()
        # The override replaces the default mapping: infra-admin means nothing here.
        assert me["permissions"] == ["migrations:execute", "migrations:read", "monitoring:read"]
        denied = await client.post("/api/v1/databases", json={}, headers=bearer(token))
        assert denied.status_code == 403
        assert denied.json()["error"]["details"]["required"] == "databases:write"


# -- production and the development issuer ------------------------------------------------------
def _production(
    postgres: EmbeddedPostgres, temporal: TemporalDevServer, auth: AuthSettings
) -> Settings:
    return make_settings(
        postgres,
        temporal.address,
        auth=auth,
        profile="production",
        log={"format": "json"},
        crypto=PRODUCTION_CRYPTO,
        rate_limit=NO_BRUTE_FORCE_LIMIT,
    )


def test_production_settings_refuse_the_dev_issuer_url(
    postgres: EmbeddedPostgres, temporal_server: TemporalDevServer
) -> None:
    with pytest.raises(ValidationError, match="development issuer"):
        _production(postgres, temporal_server, AuthSettings(issuer_url=DEV_ISSUER_URL + "/"))
    # Everything else about these settings is production-worthy.
    good = AuthSettings(issuer_url="https://keycloak.example.com/realms/tenantflow")
    assert production_problems(_production(postgres, temporal_server, good)) == []


def test_production_settings_refuse_the_dev_issuer_on_its_configured_port(
    postgres: EmbeddedPostgres, temporal_server: TemporalDevServer
) -> None:
    auth = AuthSettings(issuer_url="http://127.0.0.1:18081/realms/tenantflow")
    with pytest.raises(ValidationError, match="development issuer"):
        make_settings(
            postgres,
            temporal_server.address,
            auth=auth,
            profile="production",
            log={"format": "json"},
            crypto=PRODUCTION_CRYPTO,
            dev={"issuer_port": 18081},
        )


async def test_validator_refusing_dev_keys_refuses_dev_tokens(
    settings: Settings, tokens: Tokens
) -> None:
    token = tokens.token("infra-admin")
    assert kid_of(token).startswith(DEV_KEY_ID_PREFIX)
    fetched: list[str] = []

    async def record(request: httpx.Request) -> None:
        fetched.append(str(request.url))

    async with httpx.AsyncClient(event_hooks={"request": [record]}) as http:
        jwks = JwksCache(
            settings.auth.resolved_jwks_url, max_age=300, min_refresh_interval=0, http=http
        )
        strict = TokenValidator(settings.auth, jwks, refuse_dev_keys=True)
        with pytest.raises(InvalidToken, match="development issuer"):
            await strict.validate(token)
        assert fetched == []  # refused on the key id alone, before any key is fetched
        # The same token, the same keys, without the refusal: valid.
        lenient = TokenValidator(settings.auth, jwks, refuse_dev_keys=False)
        principal = await lenient.validate(token)
        assert principal.subject == "user-infra-admin"
        assert fetched == [settings.auth.resolved_jwks_url]


async def test_production_gateway_refuses_dev_issuer_tokens(
    postgres: EmbeddedPostgres,
    temporal_server: TemporalDevServer,
    settings: Settings,
    tokens: Tokens,
) -> None:
    """Defence in depth: even an issuer that slips past the settings check (here: the settings
    are validated with a real issuer URL, then pointed at the session's dev issuer without
    validation) cannot get a dev-signed token accepted in production."""
    good = AuthSettings(issuer_url="https://keycloak.example.com/realms/tenantflow")
    production = _production(postgres, temporal_server, good).model_copy(
        update={"auth": settings.auth}
    )
    async with running(create_app(production)) as client:
        response = await client.get(ME, headers=tokens.headers("infra-admin"))
        assert_refused(response, message="development issuer")


# -- the JWKS cache under expiry and outage -----------------------------------------------------
class FetchCounter:
    """An httpx request hook that counts the JWKS requests a real client sends."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    async def __call__(self, request: httpx.Request) -> None:
        self.urls.append(str(request.url))


async def test_expired_cache_is_refetched_once_by_concurrent_requests(
    settings: Settings, tokens: Tokens
) -> None:
    kid = kid_of(tokens.token("infra-viewer"))
    counter = FetchCounter()
    async with httpx.AsyncClient(event_hooks={"request": [counter]}) as http:
        jwks = JwksCache(
            settings.auth.resolved_jwks_url, max_age=0.2, min_refresh_interval=5, http=http
        )
        await jwks.get(kid)
        await asyncio.sleep(0.3)
        await asyncio.gather(*(jwks.get(kid) for _ in range(10)))
    assert len(counter.urls) == 2


async def test_identity_provider_outage_is_not_hammered(tmp_path: Path) -> None:
    port = free_port()
    issuer = DevIssuer(tmp_path / "issuer", f"http://127.0.0.1:{port}/realms/{DEV_REALM}")
    server = ThreadedServer(create_issuer_app(issuer, DEV_REALM), port)
    server.start()
    token = issuer.mint(subject="s", roles=["infra-viewer"])
    counter = FetchCounter()
    try:
        async with httpx.AsyncClient(event_hooks={"request": [counter]}) as http:
            url = f"{issuer.issuer_url}/protocol/openid-connect/certs"
            jwks = JwksCache(url, max_age=0.2, min_refresh_interval=60, http=http)
            await jwks.get(kid_of(token))
            server.stop()
            await asyncio.sleep(0.3)
            for _ in range(10):
                await jwks.get(kid_of(token))  # the known key keeps working during the outage
    finally:
        server.stop()
    assert len(counter.urls) <= 2


async def test_id_and_refresh_tokens_are_refused(
    postgres: EmbeddedPostgres,
    temporal_server: TemporalDevServer,
    settings: Settings,
    tokens: Tokens,
) -> None:
    app = create_app(
        make_settings(
            postgres, temporal_server.address, auth=settings.auth, rate_limit=NO_BRUTE_FORCE_LIMIT
        )
    )
    async with running(app) as client:
        for typ in ("ID", "Refresh"):
            token = tokens.token("infra-admin", typ=typ)
            response = await client.get(ME, headers={"Authorization": f"Bearer {token}"})
            assert_refused(response, message="only access tokens")
        ok = await client.get(ME, headers=tokens.headers("infra-viewer"))
        assert ok.status_code == 200


async def test_token_without_a_key_id_is_refused(
    gateway: httpx.AsyncClient, tokens: Tokens
) -> None:
    genuine = tokens.token("infra-viewer")
    for header in ({"alg": "RS256", "typ": "JWT"}, {"alg": "RS256", "typ": "JWT", "kid": ""}):
        forged = with_header(genuine, header)
        assert_refused(await gateway.get(ME, headers=bearer(forged)), message="no key id")


@pytest.mark.parametrize(
    ("claims", "roles"),
    [
        ({}, []),
        ({"realm_access": ["infra-admin"], "resource_access": "infra-admin"}, []),
        ({"resource_access": {"tenantflow-api": ["infra-admin"]}}, []),
        ({"resource_access": {"other": {"roles": ["infra-admin"]}}}, []),
        (
            {
                "realm_access": {"roles": ["infra-viewer", 7]},
                "resource_access": {"tenantflow-api": {"roles": ["infra-operator", None]}},
            },
            ["infra-operator", "infra-viewer"],
        ),
    ],
    ids=["none", "not-objects", "client-not-an-object", "another-client", "both"],
)
def test_roles_come_only_from_well_formed_claims(claims: dict[str, Any], roles: list[str]) -> None:
    assert roles_from_claims(claims, "tenantflow-api") == roles


async def test_remembered_tokens_are_bounded(
    settings: Settings, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(token_module, "VERIFIED_MAX_ENTRIES", 2)
    fetched: list[str] = []

    async def record(request: httpx.Request) -> None:
        fetched.append(str(request.url))

    async with httpx.AsyncClient(event_hooks={"request": [record]}) as http:
        jwks = JwksCache(
            settings.auth.resolved_jwks_url, max_age=300, min_refresh_interval=0, http=http
        )
        validator = TokenValidator(settings.auth, jwks, refuse_dev_keys=False)
        first = tokens.token("a")
        for role in ("a", "b", "c"):
            token = first if role == "a" else tokens.token(role)
            assert (await validator.validate(token)).subject == f"user-{role}"
        assert len(validator._verified) == 2
        # The first was forgotten: it is verified again (and still valid), the others are not.
        assert (await validator.validate(first)).subject == "user-a"
        assert len(validator._verified) == 2
    assert fetched == [settings.auth.resolved_jwks_url]
