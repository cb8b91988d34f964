"""A local identity provider with Keycloak's URL layout and claim layout, for development and tests.

Its HTTP face (``cli.dev_issuer_app``) serves, under ``/realms/{realm}``: the discovery
document, the JWKS (``/protocol/openid-connect/certs``), the token endpoint
(``/protocol/openid-connect/token``: client-credentials, password, refresh-token, device-code and
authorization-code grants), the authorization endpoint (``/protocol/openid-connect/auth``: a
login page for the dashboard's code flow with PKCE), the device authorization endpoint
(``/protocol/openid-connect/auth/device``) with its verification page (``/device``) and the
logout endpoint (``/protocol/openid-connect/logout``); this module signs RS256 tokens carrying
``realm_access`` and ``resource_access`` like Keycloak's. The gateway validates them with exactly
the production code. Keys, clients, users and login sessions live in ``.tenantflow/issuer/``
(files mode 0600; a session keeps only a hash of its refresh tokens). Key ids start with
``tenantflow-dev-``, which the production profile refuses.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cli.dev_logins import AuthorizationCodes, DeviceLogins, Sessions, oauth_error, write_private
from common.settings import DEV_KEY_ID_PREFIX, DEV_REALM

DEV_USERS = {
    "admin": ["infra-admin"],
    "operator": ["infra-operator"],
    "viewer": ["infra-viewer"],
}
API_CLIENT = "tenantflow-api"
CLI_CLIENT = "tenantflow-cli"
# The dashboard's public client: authorization code with PKCE, like the realm's tenantflow-ui.
UI_CLIENT = "tenantflow-ui"
PUBLIC_CLIENTS = (CLI_CLIENT, UI_CLIENT)
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
ACCESS_TOKEN_SECONDS = 3600
# Where the dashboard's code flow may redirect to: this machine only.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def dev_issuer_url(port: int) -> str:
    """The dev issuer's issuer URL when it listens on ``port``."""
    return f"http://127.0.0.1:{port}/realms/{DEV_REALM}"


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
            write_private(self._secrets_path, json.dumps(generated, indent=2).encode())
        self._sessions = Sessions(data_dir / "sessions.json")
        self._devices = DeviceLogins()
        self._codes = AuthorizationCodes()

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
        write_private(self.keys_dir / f"{time.time_ns():020d}_{kid}.pem", pem)
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
        lifetime_seconds: int = ACCESS_TOKEN_SECONDS,
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

    def _client(self, form: dict[str, str]) -> str:
        """Authenticate the calling client the way Keycloak does; return its id."""
        client_id = form.get("client_id", "")
        clients = self._secrets()["clients"]
        if client_id in clients:
            # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
            presented = form.get("client_secret", "").encode()
            if not secrets.compare_digest(presented, clients[client_id].encode()):
                raise oauth_error(401, "unauthorized_client", "Invalid client credentials")
        elif client_id not in PUBLIC_CLIENTS:
            raise oauth_error(401, "invalid_client", "Invalid client or client credentials")
        return client_id

    def _check_user(self, username: str, password: str) -> None:
        expected = self._secrets()["users"].get(username)
        if expected is None or not secrets.compare_digest(password.encode(), expected.encode()):
            raise oauth_error(401, "invalid_grant", "Invalid user credentials")

    def grant(self, form: dict[str, str]) -> dict[str, Any]:
        """Answer a token request the way Keycloak does (raises ``HTTPException``)."""
        grant_type = form.get("grant_type", "")
        client_id = self._client(form)
        if grant_type == "client_credentials":
            if client_id not in self._secrets()["clients"]:
                raise oauth_error(401, "unauthorized_client", "Public client not allowed")
            token = self.mint(
                subject=f"service-account-{client_id}",
                roles=["infra-operator"],
                client_id=client_id,
                username=f"service-account-{client_id}",
            )
            return _issued(token)
        if grant_type == "password":
            username = form.get("username", "")
            self._check_user(username, form.get("password", ""))
            return self._log_in(username, client_id)
        if grant_type == "refresh_token":
            session = self._sessions.find(form.get("refresh_token", ""), client_id)
            if session is None:
                raise oauth_error(400, "invalid_grant", "Invalid refresh token")
            return self._log_in(session["username"], client_id, session["sid"])
        if grant_type == DEVICE_CODE_GRANT:
            return self._log_in(
                self._devices.redeem(form.get("device_code", ""), client_id), client_id
            )
        if grant_type == "authorization_code" and client_id == UI_CLIENT:
            username = self._codes.redeem(
                form.get("code", ""),
                client_id,
                form.get("redirect_uri", ""),
                form.get("code_verifier", ""),
            )
            return self._log_in(username, client_id)
        raise oauth_error(400, "unsupported_grant_type", "Unsupported grant_type")

    def _log_in(self, username: str, client_id: str, sid: str | None = None) -> dict[str, Any]:
        """An access token and a refresh token of a (new or continued) login session."""
        sid = sid or str(uuid.uuid4())
        token = self.mint(
            subject=str(uuid.uuid5(uuid.NAMESPACE_URL, username)),
            roles=DEV_USERS[username],
            client_id=client_id,
            username=username,
            sid=sid,
            session_state=sid,
        )
        refresh = self._sessions.issue(sid, username, client_id)
        return _issued(token, refresh, self._sessions.idle_seconds)

    # -- authorization code with PKCE (the dashboard's sign-in) --------------------------------
    def check_authorization_request(self, query: dict[str, str]) -> None:
        """Refuse, before showing a login form, what Keycloak would refuse: another client, a
        redirect URI off this machine, or no S256 challenge."""
        if query.get("client_id") != UI_CLIENT:
            raise oauth_error(400, "invalid_client", "Client not allowed the code flow")
        if query.get("response_type") != "code":
            raise oauth_error(400, "unsupported_response_type", "Only response_type=code")
        redirect = urlsplit(query.get("redirect_uri", ""))
        if redirect.scheme not in ("http", "https") or redirect.hostname not in LOOPBACK:
            raise oauth_error(400, "invalid_request", "Invalid parameter: redirect_uri")
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            raise oauth_error(400, "invalid_request", "Missing parameter: code_challenge (S256)")

    def authorize(self, query: dict[str, str], username: str, password: str) -> str:
        """The user signed in on the login page: where to send the browser, with the code."""
        self.check_authorization_request(query)
        self._check_user(username, password)
        code = self._codes.issue(
            UI_CLIENT, query["redirect_uri"], query["code_challenge"], username
        )
        answer = urlencode({"code": code, "state": query.get("state", "")})
        separator = "&" if "?" in query["redirect_uri"] else "?"
        return f"{query['redirect_uri']}{separator}{answer}"

    # -- device authorization (RFC 8628) and logout --------------------------------------------
    def authorize_device(self, form: dict[str, str]) -> dict[str, Any]:
        """Start a device login: codes for the CLI and the page where its user approves it."""
        client_id = self._client(form)
        device_code, user_code = self._devices.start(client_id)
        page = f"{self.issuer_url}/device"
        return {
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": page,
            "verification_uri_complete": f"{page}?user_code={user_code}",
            "expires_in": self._devices.lifetime_seconds,
            "interval": self._devices.interval_seconds,
        }

    def approve_device(self, user_code: str, username: str, password: str) -> None:
        """The user signs in on the verification page, which lets the waiting device in."""
        self._check_user(username, password)
        self._devices.approve(user_code, username)

    def logout(self, form: dict[str, str]) -> None:
        """End the login session the refresh token belongs to (every token of it)."""
        client_id = self._client(form)
        if not self._sessions.end(form.get("refresh_token", ""), client_id):
            raise oauth_error(400, "invalid_grant", "Invalid refresh token")


def _issued(access: str, refresh: str | None = None, refresh_seconds: int = 0) -> dict[str, Any]:
    issued: dict[str, Any] = {
        "access_token": access,
        "expires_in": ACCESS_TOKEN_SECONDS,
        "refresh_expires_in": refresh_seconds if refresh else 0,
        "token_type": "Bearer",
        "not-before-policy": 0,
        "scope": "openid profile email",
    }
    if refresh:
        issued["refresh_token"] = refresh
    return issued
