"""Catalog access for webhook endpoints. Signing secrets are generated and encrypted here; they
are decrypted only inside the delivery activity, never returned after the create."""

from __future__ import annotations

import base64
import builtins
import secrets
import uuid
from dataclasses import dataclass

import asyncpg

from common.catalog.keys import rotate_column
from common.crypto import CredentialCipher
from common.errors import NotFound
from models.webhooks import (
    Webhook,
    WebhookCreate,
    WebhookCreated,
    WebhookEventType,
    WebhookUpdate,
)

SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
SECRET_BYTES = 32

_COLUMNS = (
    "id, url, description, event_types, enabled, disabled_reason, secret_key_id, "
    "created_at, updated_at"
)


def secret_context(endpoint_id: uuid.UUID) -> str:
    """AES-GCM associated data: a ciphertext only decrypts for the endpoint it was written for."""
    return f"webhook:{endpoint_id}:secret"


def generate_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


@dataclass(frozen=True)
class DeliveryTarget:
    """What the delivery activity needs: where to POST and the decrypted secret."""

    endpoint: Webhook
    secret: str

    def __repr__(self) -> str:
        return f"DeliveryTarget(endpoint={self.endpoint.id}, secret=***)"


def _row_to_model(row: asyncpg.Record) -> Webhook:
    return Webhook(
        id=row["id"],
        url=row["url"],
        description=row["description"],
        event_types=[WebhookEventType(t) for t in row["event_types"]],
        enabled=row["enabled"],
        disabled_reason=row["disabled_reason"],
        secret_key_id=row["secret_key_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _not_found(endpoint_id: uuid.UUID) -> NotFound:
    return NotFound(f"no webhook {endpoint_id}", details={"id": str(endpoint_id)})


class WebhookRepository:
    """CRUD on the ``webhook_endpoints`` table of the catalog."""

    def __init__(self, pool: asyncpg.Pool, cipher: CredentialCipher) -> None:
        self.pool = pool
        self.cipher = cipher

    async def create(self, spec: WebhookCreate) -> WebhookCreated:
        """Insert an endpoint with a fresh secret, encrypted under the active key; the answer
        is the only place the plaintext secret ever appears."""
        endpoint_id = uuid.uuid4()
        secret = generate_secret()
        encrypted = self.cipher.encrypt(secret, context=secret_context(endpoint_id))
        row = await self.pool.fetchrow(
            "INSERT INTO webhook_endpoints (id, url, description, event_types, "  # noqa: S608 - constant columns
            "secret_encrypted, secret_key_id) VALUES ($1, $2, $3, $4, $5, $6) "
            f"RETURNING {_COLUMNS}",
            endpoint_id,
            str(spec.url),
            spec.description,
            [t.value for t in spec.event_types],
            encrypted,
            self.cipher.key_id_of(encrypted),
        )
        assert row is not None
        return WebhookCreated(**_row_to_model(row).model_dump(), secret=secret)

    async def get(self, endpoint_id: uuid.UUID) -> Webhook:
        """One endpoint, or ``NotFound``."""
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE id = $1",  # noqa: S608 - constant columns
            endpoint_id,
        )
        if row is None:
            raise _not_found(endpoint_id)
        return _row_to_model(row)

    async def list(self) -> list[Webhook]:
        """Every endpoint, newest first."""
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM webhook_endpoints ORDER BY created_at DESC, id"  # noqa: S608 - constant columns
        )
        return [_row_to_model(r) for r in rows]

    async def update(self, endpoint_id: uuid.UUID, change: WebhookUpdate) -> Webhook:
        """Change the given fields; enabling clears the disabled reason."""
        row = await self.pool.fetchrow(
            "UPDATE webhook_endpoints SET "  # noqa: S608 - constant columns
            "url = COALESCE($2, url), description = COALESCE($3, description), "
            "event_types = COALESCE($4, event_types), enabled = COALESCE($5, enabled), "
            "disabled_reason = CASE WHEN $5::boolean THEN NULL ELSE disabled_reason END, "
            f"updated_at = now() WHERE id = $1 RETURNING {_COLUMNS}",
            endpoint_id,
            str(change.url) if change.url is not None else None,
            change.description,
            [t.value for t in change.event_types] if change.event_types is not None else None,
            change.enabled,
        )
        if row is None:
            raise _not_found(endpoint_id)
        return _row_to_model(row)

    async def delete(self, endpoint_id: uuid.UUID) -> None:
        """Remove an endpoint; deliveries still waiting stop at their next attempt."""
        result = await self.pool.execute("DELETE FROM webhook_endpoints WHERE id = $1", endpoint_id)
        if result == "DELETE 0":
            raise _not_found(endpoint_id)

    async def disable(self, endpoint_id: uuid.UUID, reason: str) -> None:
        """Disable an endpoint with a reason operators see (a 410 answer, for example)."""
        await self.pool.execute(
            "UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, "
            "updated_at = now() WHERE id = $1",
            endpoint_id,
            reason[:500],
        )

    async def subscribed(self, event_type: WebhookEventType) -> builtins.list[uuid.UUID]:
        """Ids of the enabled endpoints subscribed to ``event_type``."""
        rows = await self.pool.fetch(
            "SELECT id FROM webhook_endpoints WHERE enabled AND event_types @> ARRAY[$1]::text[] "
            "ORDER BY id",
            event_type.value,
        )
        return [r["id"] for r in rows]

    async def delivery_target(self, endpoint_id: uuid.UUID) -> DeliveryTarget | None:
        """The endpoint and its decrypted secret (activities only); None once deleted."""
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS}, secret_encrypted FROM webhook_endpoints WHERE id = $1",  # noqa: S608 - constant columns
            endpoint_id,
        )
        if row is None:
            return None
        secret = self.cipher.decrypt(row["secret_encrypted"], context=secret_context(endpoint_id))
        return DeliveryTarget(endpoint=_row_to_model(row), secret=secret)

    async def rotate_keys(self, *, batch_size: int = 500) -> int:
        """Re-encrypt every signing secret not under the active key; return how many changed.
        The secret itself does not change, so receivers notice nothing."""
        return await rotate_column(
            self.pool,
            self.cipher,
            table="webhook_endpoints",
            column="secret_encrypted",
            key_column="secret_key_id",
            context=secret_context,
            batch_size=batch_size,
        )
