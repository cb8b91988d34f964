"""The webhook_endpoints table: secrets encrypted per row, subscriptions, disable, key rotation."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from common.catalog import open_catalog
from common.catalog.webhooks import WebhookRepository
from common.crypto import CredentialCipher, CredentialDecryptionError, KeyRing
from common.errors import NotFound
from common.settings import CatalogSettings
from models.webhooks import WebhookCreate, WebhookEventType, WebhookUpdate
from tests.conftest import LEAK_CANARIES

KEY_A = os.urandom(32)
KEY_B = os.urandom(32)
DRIFTED = WebhookEventType.DATABASE_DRIFTED
FAILED = WebhookEventType.MIGRATION_FAILED


def cipher(active: str = "a") -> CredentialCipher:
    return CredentialCipher(KeyRing({"a": KEY_A, "b": KEY_B}, active_key_id=active))


def spec(*types: WebhookEventType) -> WebhookCreate:
    return WebhookCreate(url="https://hooks.example.com/x", event_types=list(types))


@pytest.fixture
async def pool(fresh_database: str) -> AsyncIterator[asyncpg.Pool]:
    catalog = await open_catalog(CatalogSettings(dsn=fresh_database))
    yield catalog
    await catalog.close()


async def test_subscriptions_follow_types_and_enabled(pool: asyncpg.Pool) -> None:
    repository = WebhookRepository(pool, cipher())
    drift = await repository.create(spec(DRIFTED))
    both = await repository.create(spec(DRIFTED, FAILED))
    LEAK_CANARIES.update({drift.secret, both.secret})
    assert set(await repository.subscribed(DRIFTED)) == {drift.id, both.id}
    assert await repository.subscribed(FAILED) == [both.id]
    assert await repository.subscribed(WebhookEventType.TENANT_PROVISIONED) == []

    await repository.disable(both.id, "the receiver answered 410 Gone")
    assert await repository.subscribed(DRIFTED) == [drift.id]
    target = await repository.delivery_target(both.id)
    assert target is not None
    assert target.secret == both.secret
    assert target.endpoint.enabled is False
    assert both.secret not in repr(target)

    again = await repository.update(both.id, WebhookUpdate(enabled=True))
    assert (again.enabled, again.disabled_reason) == (True, None)
    await repository.delete(both.id)
    assert await repository.delivery_target(both.id) is None
    with pytest.raises(NotFound):
        await repository.get(both.id)
    with pytest.raises(NotFound):
        await repository.update(uuid.uuid4(), WebhookUpdate(enabled=True))


async def test_a_secret_copied_to_another_row_does_not_decrypt(pool: asyncpg.Pool) -> None:
    repository = WebhookRepository(pool, cipher())
    one = await repository.create(spec(FAILED))
    two = await repository.create(spec(FAILED))
    LEAK_CANARIES.update({one.secret, two.secret})
    await pool.execute(
        "UPDATE webhook_endpoints SET secret_encrypted = "
        "(SELECT secret_encrypted FROM webhook_endpoints WHERE id = $1) WHERE id = $2",
        one.id,
        two.id,
    )
    with pytest.raises(CredentialDecryptionError):
        await repository.delivery_target(two.id)


async def test_rotate_keys(pool: asyncpg.Pool) -> None:
    created = await WebhookRepository(pool, cipher("a")).create(spec(FAILED))
    LEAK_CANARIES.add(created.secret)
    assert created.secret_key_id == "a"
    rotated = WebhookRepository(pool, cipher("b"))
    assert await rotated.rotate_keys() == 1
    assert await rotated.rotate_keys() == 0
    assert (await rotated.get(created.id)).secret_key_id == "b"
    only_b = CredentialCipher(KeyRing({"b": KEY_B}, active_key_id="b"))
    target = await WebhookRepository(pool, only_b).delivery_target(created.id)
    assert target is not None and target.secret == created.secret
