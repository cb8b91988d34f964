"""The targets table: encrypted passwords, label filters, pagination, key rotation."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from common.catalog import open_catalog
from common.catalog.databases import DatabaseRepository, password_context
from common.crypto import CredentialCipher, CredentialDecryptionError, KeyRing
from common.errors import Conflict, InvalidInput, NotFound, TenantflowError
from common.settings import CatalogSettings
from models.databases import DatabaseCreate

KEY_A = os.urandom(32)
KEY_B = os.urandom(32)


def cipher(active: str = "a") -> CredentialCipher:
    return CredentialCipher(KeyRing({"a": KEY_A, "b": KEY_B}, active_key_id=active))


def spec(name: str, password: str = "pw-secret", **labels: str) -> DatabaseCreate:  # noqa: S107
    return DatabaseCreate.model_validate(
        {
            "name": name,
            "host": "db.internal",
            "database": "tenant_db",
            "user": "tenant_owner",
            "password": password,
            "labels": labels,
        }
    )


@pytest.fixture
async def repository(fresh_database: str) -> AsyncIterator[DatabaseRepository]:
    pool = await open_catalog(CatalogSettings(dsn=fresh_database))
    yield DatabaseRepository(pool, cipher())
    await pool.close()


async def test_password_is_stored_encrypted_and_decrypts_for_its_row(
    repository: DatabaseRepository,
) -> None:
    created = await repository.create(spec("tenant-1", password="pw-plain-1"))
    stored = await repository.pool.fetchval(
        "SELECT password_encrypted FROM databases WHERE id = $1", created.id
    )
    assert "pw-plain-1" not in stored
    assert stored.startswith("tf1:a:")
    assert created.password_key_id == "a"
    params = await repository.connection_params(created.id)
    assert params["password"] == "pw-plain-1"
    # The same ciphertext copied onto another row does not decrypt there.
    other = await repository.create(spec("tenant-2"))
    with pytest.raises(CredentialDecryptionError):
        repository.cipher.decrypt(stored, context=password_context(other.id))


async def test_duplicate_names_conflict(repository: DatabaseRepository) -> None:
    await repository.create(spec("tenant-dup"))
    with pytest.raises(Conflict, match="already registered"):
        await repository.create(spec("tenant-dup"))


async def test_label_filter_tenant_filter_and_pagination(repository: DatabaseRepository) -> None:
    for i in range(5):
        await repository.create(spec(f"t-{i}", tier="free" if i % 2 else "paid", region="eu"))
    free = await repository.list(labels={"tier": "free", "region": "eu"})
    assert [d.name for d in free.items] == ["t-1", "t-3"]
    first = await repository.list(limit=2)
    second = await repository.list(limit=2, cursor=first.next_cursor)
    third = await repository.list(limit=2, cursor=second.next_cursor)
    assert [d.name for d in first.items + second.items + third.items] == [
        f"t-{i}" for i in range(5)
    ]
    assert third.next_cursor is None
    with pytest.raises(InvalidInput):
        await repository.list(cursor="%%%")


async def test_get_and_delete_unknown_ids_are_not_found(repository: DatabaseRepository) -> None:
    missing = uuid.uuid4()
    with pytest.raises(NotFound):
        await repository.get(missing)
    with pytest.raises(NotFound):
        await repository.delete(missing)
    created = await repository.create(spec("tenant-del"))
    await repository.delete(created.id)
    with pytest.raises(NotFound):
        await repository.get(created.id)


async def test_rotate_keys_re_encrypts_under_the_active_key(
    repository: DatabaseRepository,
) -> None:
    ids = [(await repository.create(spec(f"r-{i}", password=f"pw-{i}"))).id for i in range(3)]
    rotated = DatabaseRepository(repository.pool, cipher(active="b"))
    assert await rotated.rotate_keys(batch_size=2) == 3
    assert await rotated.rotate_keys() == 0
    key_ids = await repository.pool.fetch("SELECT DISTINCT password_key_id FROM databases")
    assert [r["password_key_id"] for r in key_ids] == ["b"]
    for i, database_id in enumerate(ids):
        assert (await rotated.connection_params(database_id))["password"] == f"pw-{i}"
    # After rotation the old key can be removed: a ring with only "b" still decrypts.
    only_b = CredentialCipher(KeyRing({"b": KEY_B}, active_key_id="b"))
    params = await DatabaseRepository(repository.pool, only_b).connection_params(ids[0])
    assert params["password"] == "pw-0"


def test_key_fixture_is_32_bytes() -> None:
    assert len(base64.b64encode(KEY_A)) == 44
    assert isinstance(asyncpg.Pool, type)


async def test_connection_params_of_an_unknown_target_are_not_found(
    repository: DatabaseRepository,
) -> None:
    missing = uuid.uuid4()
    with pytest.raises(NotFound) as caught:
        await repository.connection_params(missing)
    assert caught.value.details == {"id": str(missing)}


async def test_one_undecryptable_password_fails_only_its_own_target(
    repository: DatabaseRepository,
) -> None:
    good = await repository.create(spec("tenant-good", password="pw-good"))
    bad = await repository.create(spec("tenant-bad"))
    # The good row's ciphertext on the bad row: bound to another id, it does not decrypt there.
    await repository.pool.execute(
        "UPDATE databases SET password_encrypted = "
        "(SELECT password_encrypted FROM databases WHERE id = $1) WHERE id = $2",
        good.id,
        bad.id,
    )
    missing = uuid.uuid4()
    found = await repository.connection_params_each([good.id, bad.id, missing])
    assert set(found) == {good.id, bad.id}  # the unknown id is left out
    good_params = found[good.id]
    assert isinstance(good_params, dict)
    assert good_params["password"] == "pw-good"
    assert isinstance(found[bad.id], TenantflowError)
