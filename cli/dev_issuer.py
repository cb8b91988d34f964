"""A local identity provider with Keycloak's URL layout and claim layout, for development and tests.

It serves, under ``/realms/{realm}``: the discovery document, the JWKS
(``/protocol/openid-connect/certs``) and the token endpoint (``/protocol/openid-connect/token``,
client-credentials and password grants), and signs RS256 tokens carrying ``realm_access`` and
``resource_access`` like Keycloak's. The gateway validates them with exactly the production code.
Keys, clients and users live in ``.tenantflow/issuer/`` (files mode 0600). Key ids start with
``tenantflow-dev-``, which the production profile refuses.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Form, HTTPException
from fastapi.responses import JSONResponse

from common.settings import DEV_KEY_ID_PREFIX, DEV_REALM

DEV_USERS = {
    "admin": ["infra-admin"],
    "operator": ["infra-operator"],
    "viewer": ["infra-viewer"],
}
API_CLIENT = "tenantflow-api"
CLI_CLIENT = "tenantflow-cli"


def dev_issuer_url(port: int) -> str:
    """The dev issuer's issuer URL when it listens on ``port``."""
    return f"http://127.0.0.1:{port}/realms/{DEV_REALM}"


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)


class DevIssuer:
    """Signing keys, clients and users of the development realm, kept on disk."""

    def __init__(self, data_dir: Path, issuer_url: str, audience: str = API_CLIENT) -> None:
        self.data_dir = data_dir
        self.issuer_url = issuer_url.rstrip("/")
        self.audience = audience
        self.keys_dir = data_dir / "keys"
        self._loaded: dict[str, rsa.RSAPrivateKey] = {}
        if not any(self.keys_dir.glob("*.pem")):
            self.rotate()
        self._secrets_path = data_dir / "secrets.json"
        if not self._secrets_path.exists():
            generated = {
                "clients": {API_CLIENT: secrets.token_urlsafe(24)},
                "users": {name: secrets.token_urlsafe(12) for name in DEV_USERS},
            }
            _write_private(self._secrets_path, json.dumps(generated, indent=2).encode())

    # -- keys -------------------------------------------------------------------------------
    def rotate(self) -> str:
        """Create a new signing key (older ones stay published); return its key id."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        kid = DEV_KEY_ID_PREFIX + hashlib.sha256(public).hexdigest()[:16]
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # Name files by creation time so the newest key signs.
        _write_private(self.keys_dir / f"{time.time_ns():020d}_{kid}.pem", pem)
        return kid

    def _keys(self) -> list[tuple[str, rsa.RSAPrivateKey]]:
        found = []
        for path in sorted(self.keys_dir.glob("*.pem")):
            # Loading a PEM checks the RSA key (about 60 ms): each file is loaded once. A file
            # never changes under its name (rotation writes a new one), so the name is the key.
            key = self._loaded.get(path.name)
            if key is None:
                loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
                assert isinstance(loaded, rsa.RSAPrivateKey)
                key = self._loaded[path.name] = loaded
            found.append((path.stem.split("_", 1)[1], key))
        return found

    def jwks(self) -> dict[str, Any]:
        """The public keys, as Keycloak publishes them."""
        keys = []
        for kid, key in self._keys():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    # -- secrets ------------------------------------------------------------------------------
    def _secrets(self) -> dict[str, dict[str, str]]:
        loaded: dict[str, dict[str, str]] = json.loads(self._secrets_path.read_text())
        return loaded

    def client_secret(self, client_id: str = API_CLIENT) -> str:
        """The generated secret of a confidential dev client."""
        return self._secrets()["clients"][client_id]

    def user_password(self, username: str) -> str:
        """The generated password of a dev user."""
        return self._secrets()["users"][username]

    # -- tokens -------------------------------------------------------------------------------
    def mint(
        self,
        *,
        subject: str,
        roles: list[str],
        client_id: str = CLI_CLIENT,
        username: str | None = None,
        lifetime_seconds: int = 3600,
        client_roles: dict[str, list[str]] | None = None,
        **overrides: Any,
    ) -> str:
        """Sign an access token shaped like Keycloak's with the newest key."""
        kid, key = self._keys()[-1]
        now = int(time.time())
        claims: dict[str, Any] = {
            "exp": now + lifetime_seconds,
            "iat": now,
            "nbf": now,
            "jti": str(uuid.uuid4()),
            "iss": self.issuer_url,
            "aud": [self.audience, "account"],
            "sub": subject,
            "typ": "Bearer",
            "azp": client_id,
            "preferred_username": username or subject,
            "realm_access": {"roles": roles},
            "resource_access": {c: {"roles": r} for c, r in (client_roles or {}).items()},
            "scope": "openid profile email",
        }
        claims.update(overrides)
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})

    def grant(self, form: dict[str, str]) -> dict[str, Any]:
        """Answer a token request the way Keycloak does (raises ``HTTPException``)."""
        grant_type = form.get("grant_type", "")
        client_id = form.get("client_id", "")
        clients = self._secrets()["clients"]
        if client_id in clients:
            if not secrets.compare_digest(form.get("client_secret", ""), clients[client_id]):
                raise HTTPException(
                    401,
                    {
                        "error": "unauthorized_client",
                        "error_description": "Invalid client credentials",
                    },
                )
        elif client_id != CLI_CLIENT:
            raise HTTPException(
                401,
                {
                    "error": "invalid_client",
                    "error_description": "Invalid client or client credentials",
                },
            )
        if grant_type == "client_credentials":
            if client_id not in clients:
                raise HTTPException(
                    401,
                    {
                        "error": "unauthorized_client",
                        "error_description": "Public client not allowed",
                    },
                )
            token = self.mint(
                subject=f"service-account-{client_id}",
                roles=["infra-operator"],
                client_id=client_id,
                username=f"service-account-{client_id}",
            )
        elif grant_type == "password":
            username = form.get("username", "")
            expected = self._secrets()["users"].get(username)
            if expected is None or not secrets.compare_digest(form.get("password", ""), expected):
                raise HTTPException(
                    401, {"error": "invalid_grant", "error_description": "Invalid user credentials"}
                )
            token = self.mint(
                subject=str(uuid.uuid5(uuid.NAMESPACE_URL, username)),
                roles=DEV_USERS[username],
                client_id=client_id,
                username=username,
            )
        else:
            raise HTTPException(
                400,
                {"error": "unsupported_grant_type", "error_description": "Unsupported grant_type"},
            )
        return {
            "access_token": token,
            "expires_in": 3600,
            "refresh_expires_in": 0,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "scope": "openid profile email",
        }


def create_issuer_app(issuer: DevIssuer, realm: str) -> FastAPI:
    """The HTTP face of ``issuer`` with Keycloak's paths."""
    app = FastAPI(title="tenantflow dev issuer", docs_url=None, redoc_url=None, openapi_url=None)
    base = f"/realms/{realm}"

    @app.exception_handler(HTTPException)
    async def _oauth_error(_request: Any, exc: HTTPException) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content=exc.detail)

    @app.get(base)
    async def realm_info() -> dict[str, Any]:
        return {"realm": realm, "token-service": f"{issuer.issuer_url}/protocol/openid-connect"}

    @app.get(f"{base}/.well-known/openid-configuration")
    async def discovery() -> dict[str, Any]:
        oidc = f"{issuer.issuer_url}/protocol/openid-connect"
        return {
            "issuer": issuer.issuer_url,
            "jwks_uri": f"{oidc}/certs",
            "token_endpoint": f"{oidc}/token",
            "grant_types_supported": ["client_credentials", "password"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    @app.get(f"{base}/protocol/openid-connect/certs")
    async def certs() -> dict[str, Any]:
        return issuer.jwks()

    @app.post(f"{base}/protocol/openid-connect/token")
    async def token(
        grant_type: Annotated[str, Form()],
        client_id: Annotated[str, Form()] = "",
        client_secret: Annotated[str, Form()] = "",
        username: Annotated[str, Form()] = "",
        password: Annotated[str, Form()] = "",
    ) -> dict[str, Any]:
        return issuer.grant(
            {
                "grant_type": grant_type,
                "client_id": client_id,
                "client_secret": client_secret,
                "username": username,
                "password": password,
            }
        )

    return app
