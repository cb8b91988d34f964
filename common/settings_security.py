"""Settings groups of authentication, rate limits and credential encryption. Part of
``common.settings``, which re-exports them."""

from __future__ import annotations

import hashlib
import re

from pydantic import BaseModel, Field, SecretStr, model_validator

from common.settings_services import DEV_ISSUER_URL
from models.auth import DEFAULT_ROLE_PERMISSIONS, Permission


def _default_role_permissions() -> dict[str, list[Permission]]:
    return {role: list(perms) for role, perms in DEFAULT_ROLE_PERMISSIONS.items()}


# sha256 of the empty string: never a break-glass token.
EMPTY_TOKEN_SHA256 = hashlib.sha256(b"").hexdigest()
_PLAIN_BREAK_GLASS_NAMES = frozenset({"break_glass_token", "break_glass_password"})


class AuthSettings(BaseModel):
    """Keycloak (or the dev issuer): who may call the API and with which permissions."""

    issuer_url: str = Field(
        default=DEV_ISSUER_URL,
        description="The realm's issuer, `https://<keycloak>/realms/<realm>`; must contain "
        "`/realms/`. Tokens must carry exactly this `iss`. Keycloak's base URL and the realm "
        "name for the token proxy are derived from it. The production profile refuses the "
        "default (the dev issuer) and any loopback host.",
    )
    audience: str = Field(
        default="tenantflow-api",
        description="Tokens must name this in `aud` (string or list) or in `azp`.",
    )
    client_id: str = Field(
        default="tenantflow-api",
        description="Client used by `POST /api/v1/auth/token` for password grants when the "
        "request names none. Also the client whose `resource_access` roles count.",
    )
    client_secret: SecretStr | None = Field(
        default=None,
        description="Secret of that client, for the token proxy's password grants. `tenantflow "
        "dev` sets it.",
    )
    ui_client_id: str = Field(
        default="tenantflow-ui",
        description="Public client (no secret) the dashboard at `/ui` signs in with through the "
        "authorization-code flow with PKCE; it needs `{gateway}/ui/` as a redirect URI and the "
        "gateway as a web origin.",
    )
    jwks_url: str | None = Field(
        default=None,
        description="Where the realm's signing keys are published; unset: "
        "`{ISSUER_URL}/protocol/openid-connect/certs`. A loopback host is refused in "
        "production.",
    )
    jwks_cache_seconds: float = Field(
        default=300.0,
        ge=0,
        le=86400,
        description="How long fetched signing keys are trusted before a refetch. If a refetch "
        "fails, the keys already held stay in use.",
    )
    jwks_refresh_min_interval_seconds: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="A token with an unknown key id triggers a JWKS refetch at most this often "
        "(picks up Keycloak key rotation without a restart, without letting made-up key ids "
        "flood Keycloak).",
    )
    leeway_seconds: int = Field(
        default=30, ge=0, le=300, description="Clock skew tolerated on `exp` and `nbf`."
    )
    http_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="Timeout of calls to Keycloak (JWKS fetch, token proxy).",
    )
    role_permissions: dict[str, list[Permission]] = Field(
        default_factory=_default_role_permissions,
        description="Which permissions each realm role or `CLIENT_ID` client role grants. "
        "Replaces the whole default map. Unknown permission names are rejected at start-up.",
        json_schema_extra={
            "doc_type": "JSON map of role → list of permissions",
            "doc_default": "`infra-viewer`, `infra-operator`, `infra-admin`, "
            "`tenant-credentials` (see [api.md](api.md#roles-and-permissions))",
        },
    )
    break_glass_token_sha256: SecretStr | None = Field(
        default=None,
        description="sha256 of the emergency token, 64 lowercase hex characters; unset: "
        "break-glass is disabled. Never the token itself: `TENANTFLOW_AUTH__BREAK_GLASS_TOKEN` "
        "and the sha256 of an empty token are refused. See "
        "[runbooks](runbooks.md#break-glass-access).",
    )

    @property
    def resolved_jwks_url(self) -> str:
        """Where the signing keys are published."""
        return self.jwks_url or f"{self.issuer_url.rstrip('/')}/protocol/openid-connect/certs"

    @property
    def server_url(self) -> str:
        """Keycloak's base URL (what python-keycloak calls ``server_url``)."""
        return self.issuer_url.split("/realms/", 1)[0] + "/"

    @property
    def realm(self) -> str:
        """The realm named in the issuer URL."""
        return self.issuer_url.rstrip("/").rsplit("/realms/", 1)[-1]

    @model_validator(mode="before")
    @classmethod
    def _no_plain_break_glass_token(cls, data: object) -> object:
        # Ignored like any unknown name, a token given in clear would leave break-glass off
        # while its secret sits in the configuration: refuse it, in every profile.
        if isinstance(data, dict) and any(
            str(key).lower() in _PLAIN_BREAK_GLASS_NAMES for key in data
        ):
            raise ValueError(
                "break-glass takes the token's sha256, never the token: set "
                "TENANTFLOW_AUTH__BREAK_GLASS_TOKEN_SHA256 and remove "
                "TENANTFLOW_AUTH__BREAK_GLASS_TOKEN"
            )
        return data

    @model_validator(mode="after")
    def _issuer_has_realm(self) -> AuthSettings:
        if "/realms/" not in self.issuer_url:
            raise ValueError("issuer_url must look like https://host/realms/<realm>")
        if self.break_glass_token_sha256 is not None:
            digest = self.break_glass_token_sha256.get_secret_value()
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ValueError("break_glass_token_sha256 must be 64 lowercase hex characters")
            if digest == EMPTY_TOKEN_SHA256:
                # An empty X-Break-Glass-Token header would then be the emergency credential.
                raise ValueError("break_glass_token_sha256 is the sha256 of an empty token")
        return self


class RateLimitSettings(BaseModel):
    """Rate limits (the ``limits`` library); in memory per process, or shared through Redis."""

    enabled: bool = Field(default=True, description="Turn all three limits on or off.")
    storage_url: SecretStr = Field(
        default=SecretStr("memory://"),
        description="Where counters live. `memory://` counts per gateway process, so N gateways "
        "allow N times the limit. `async+redis://host:6379` shares counters between gateways; "
        "it needs the `coredis` package, which is not installed by default.",
    )
    per_subject: str = Field(
        default="300/minute",
        description="Calls per authenticated caller (token subject) and route.",
    )
    auth_endpoints: str = Field(
        default="20/minute", description="Calls per client IP to `POST /api/v1/auth/token`."
    )
    failed_auth: str = Field(
        default="10/minute",
        description="Failed password logins (refused grant, wrong break-glass token) per client "
        "IP; beyond it, password logins and break-glass attempts from that IP get 429 until the "
        "window passes. Bad bearer tokens (not expired ones) are counted separately against "
        "the same limit and, beyond it, only further bad tokens get 429: valid tokens are "
        "always served.",
    )

    @model_validator(mode="after")
    def _parseable(self) -> RateLimitSettings:
        from limits import parse

        for name in ("per_subject", "auth_endpoints", "failed_auth"):
            try:
                parse(getattr(self, name))
            except ValueError:
                raise ValueError(f"{name}: not a rate limit such as '10/minute'") from None
        return self


# A well-known key for development and tests only; the production profile refuses it.
DEV_ENCRYPTION_KEY_ID = "dev"
DEV_ENCRYPTION_KEY = "ZGV2LW9ubHkta2V5LW5ldmVyLXVzZS1pbi1wcm9kISE="


class CryptoSettings(BaseModel):
    """AES-256-GCM keys for credentials at rest and Temporal payloads.

    Several keys may be configured at once so that old ciphertext still decrypts; new data is
    always encrypted with ``active_key_id``. ``tenantflow keys rotate`` re-encrypts stored data
    under the active key.
    """

    keys: dict[str, SecretStr] = Field(
        default_factory=lambda: {DEV_ENCRYPTION_KEY_ID: SecretStr(DEV_ENCRYPTION_KEY)},
        description="Key id (`[A-Za-z0-9_-]{1,32}`) → base64 of 32 random bytes (`tenantflow "
        "keys generate` prints one). Keep retired keys listed until `tenantflow keys rotate` "
        "has re-encrypted everything under the active key. The development key is refused in "
        "production. A key that is not base64 of exactly 32 bytes stops the gateway and worker "
        "at start-up.",
        json_schema_extra={
            "doc_type": "JSON map of key id → secret",
            "doc_default": '`{"dev": <public development key>}`',
        },
    )
    active_key_id: str = Field(
        default=DEV_ENCRYPTION_KEY_ID,
        description="The key id that encrypts new data; must be one of the keys.",
    )
    encrypt_payloads: bool = Field(
        default=False,
        description="Encrypt Temporal payloads (workflow and activity inputs and results). "
        "Gateways, workers and the CLI must agree. When on, the gateway's `/codec/decode` and "
        "`/codec/encode` serve the Temporal UI; when off they answer 400. Credentials never "
        "enter payloads either way.",
    )

    @model_validator(mode="after")
    def _active_key_exists(self) -> CryptoSettings:
        if self.active_key_id not in self.keys:
            raise ValueError(f"active_key_id {self.active_key_id!r} is not among the keys")
        if not all(_KEY_ID.match(kid) for kid in self.keys):
            raise ValueError("key ids must match [A-Za-z0-9_-]{1,32}")
        return self


_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
