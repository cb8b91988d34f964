"""The servers table: encrypted admin passwords, placement, references from targets."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from cli.stack import EmbeddedPostgres
from common.catalog import open_catalog
from common.catalog.databases import DatabaseRepository
from common.catalog.servers import NoServerAvailable, ServerRepository, admin_password_context
from common.crypto import CredentialCipher, CredentialDecryptionError, KeyRing
from common.errors import Conflict, InvalidInput, NotFound
from common.settings import CatalogSettings
from models.databases import DatabaseCreate
from models.servers import ServerCreate, ServerUpdate
from tests.conftest import LEAK_CANARIES

KEY_A = os.urandom(32)
KEY_B = os.urandom(32)


def cipher(active: str = "a") -> CredentialCipher:
    return CredentialCipher(KeyRing({"a": KEY_A, "b": KEY_B}, active_key_id=active))


def server_spec(name: str, password: str = "admin-secret", **fields: object) -> ServerCreate:  # noqa: S107
    LEAK_CANARIES.add(password)
    body: dict[str, object] = {
        "name": name,
        "host": "pg.internal",
        "admin_user": "tenantflow_admin",
        "admin_password": password,
    }
    body.update(fields)
    return ServerCreate.model_validate(body)


def target_spec(name: str) -> DatabaseCreate:
    return DatabaseCreate.model_validate(
        {
            "name": name,
            "host": "pg.internal",
            "database": name.replace("-", "_"),
            "user": "owner",
            "password": "pw",
        }
    )


@pytest.fixture
async def pool(fresh_database: str) -> AsyncIterator[asyncpg.Pool]:
    catalog = await open_catalog(CatalogSettings(dsn=fresh_database))
    yield catalog
    await catalog.close()


@pytest.fixture
def servers(pool: asyncpg.Pool) -> ServerRepository:
    return ServerRepository(pool, cipher())


@pytest.fixture
def databases(pool: asyncpg.Pool) -> DatabaseRepository:
    return DatabaseRepository(pool, cipher())


async def test_defaults_and_encrypted_admin_password(servers: ServerRepository) -> None:
    created = await servers.create(server_spec("pg-1", password="admin-plain-1"))
    assert created.port == 5432
    assert created.sslmode == "prefer"
    assert created.maintenance_database == "postgres"
    assert created.max_connections == 20
    assert created.target_count == 0
    assert "admin-plain-1" not in created.model_dump_json()
    row = await servers.pool.fetchrow(
        "SELECT admin_password_encrypted, admin_password_key_id FROM servers WHERE id = $1",
        created.id,
    )
    assert row is not None
    stored, key_id = row["admin_password_encrypted"], row["admin_password_key_id"]
    assert "admin-plain-1" not in stored
    assert key_id == "a"
    # The ciphertext is bound to its row: copied onto another server it does not decrypt.
    other = await servers.create(server_spec("pg-2"))
    with pytest.raises(CredentialDecryptionError):
        servers.cipher.decrypt(stored, context=admin_password_context(other.id))


async def test_admin_connection_params(servers: ServerRepository) -> None:
    created = await servers.create(
        server_spec(
            "pg-params",
            password="admin-plain-2",
            port=6543,
            sslmode="verify-full",
            maintenance_database="template1",
        )
    )
    params = await servers.admin_connection_params(created.id)
    assert params == {
        "host": "pg.internal",
        "port": 6543,
        "database": "template1",
        "user": "tenantflow_admin",
        "password": "admin-plain-2",
        "ssl": "verify-full",
    }
    assert (await servers.admin_connection_params(created.id, "tenant_x"))["database"] == (
        "tenant_x"
    )
    with pytest.raises(NotFound):
        await servers.admin_connection_params(uuid.uuid4())


async def test_admin_connection_params_connect_to_a_real_server(
    servers: ServerRepository, postgres: EmbeddedPostgres
) -> None:
    created = await servers.create(
        server_spec(
            "pg-real",
            password=postgres.password,
            host="127.0.0.1",
            port=postgres.port,
            admin_user=postgres.user,
        )
    )
    conn = await asyncpg.connect(**await servers.admin_connection_params(created.id))
    try:
        assert await conn.fetchval("SELECT current_database()") == "postgres"
    finally:
        await conn.close()


async def test_get_by_name_duplicate_and_not_found(servers: ServerRepository) -> None:
    created = await servers.create(server_spec("pg-dup"))
    assert (await servers.get_by_name("pg-dup")).id == created.id
    assert (await servers.get(created.id)).name == "pg-dup"
    with pytest.raises(Conflict, match="already registered"):
        await servers.create(server_spec("pg-dup"))
    with pytest.raises(NotFound):
        await servers.get_by_name("nope")
    with pytest.raises(NotFound):
        await servers.get(uuid.uuid4())


async def test_list_labels_and_pagination(servers: ServerRepository) -> None:
    for i in range(5):
        await servers.create(server_spec(f"s-{i}", labels={"region": "eu" if i % 2 else "us"}))
    eu = await servers.list(labels={"region": "eu"})
    assert [s.name for s in eu.items] == ["s-1", "s-3"]
    first = await servers.list(limit=2)
    second = await servers.list(limit=2, cursor=first.next_cursor)
    third = await servers.list(limit=2, cursor=second.next_cursor)
    assert [s.name for s in first.items + second.items + third.items] == [
        f"s-{i}" for i in range(5)
    ]
    assert third.next_cursor is None
    with pytest.raises(InvalidInput):
        await servers.list(cursor="%%%")


async def test_update_partial_and_password_reencrypted(servers: ServerRepository) -> None:
    created = await servers.create(server_spec("pg-upd", password="old-admin-pw"))
    updated = await servers.update(
        created.id, ServerUpdate.model_validate({"max_connections": 5, "labels": {"tier": "x"}})
    )
    assert updated.max_connections == 5
    assert updated.labels == {"tier": "x"}
    assert updated.host == "pg.internal"
    assert updated.updated_at > created.updated_at
    LEAK_CANARIES.add("new-admin-pw")
    await servers.update(
        created.id,
        ServerUpdate.model_validate({"admin_password": "new-admin-pw", "sslmode": "require"}),
    )
    params = await servers.admin_connection_params(created.id)
    assert params["password"] == "new-admin-pw"
    assert params["ssl"] == "require"
    await servers.create(server_spec("pg-other"))
    with pytest.raises(Conflict):
        await servers.update(created.id, ServerUpdate.model_validate({"name": "pg-other"}))
    with pytest.raises(NotFound):
        await servers.update(uuid.uuid4(), ServerUpdate.model_validate({"port": 1}))


async def test_delete_refused_while_targets_reference_it(
    servers: ServerRepository, databases: DatabaseRepository
) -> None:
    server = await servers.create(server_spec("pg-busy"))
    target = await databases.create(target_spec("t-busy"), server_id=server.id)
    assert target.server_id == server.id
    assert await servers.count_targets(server.id) == 1
    assert (await servers.get(server.id)).target_count == 1
    with pytest.raises(Conflict) as refused:
        await servers.delete(server.id)
    assert refused.value.details["target_count"] == 1
    await databases.delete(target.id)
    await servers.delete(server.id)
    with pytest.raises(NotFound):
        await servers.delete(server.id)


async def test_registering_on_an_unknown_server_is_not_found(
    databases: DatabaseRepository,
) -> None:
    with pytest.raises(NotFound):
        await databases.create(target_spec("t-orphan"), server_id=uuid.uuid4())


async def test_choose_least_loaded_relative_to_budget(
    servers: ServerRepository, databases: DatabaseRepository
) -> None:
    small = await servers.create(
        server_spec("pg-small", max_connections=2, labels={"region": "eu"})
    )
    big = await servers.create(server_spec("pg-big", max_connections=10, labels={"region": "eu"}))
    await servers.create(server_spec("pg-us", labels={"region": "us"}))
    # Empty servers tie at 0: the name decides.
    assert (await servers.choose({"region": "eu"})).id == big.id
    await databases.create(target_spec("t-1"), server_id=big.id)
    # big: 1/10, small: 0/2
    assert (await servers.choose({"region": "eu"})).id == small.id
    await databases.create(target_spec("t-2"), server_id=small.id)
    # big: 1/10 = 0.1 beats small: 1/2 = 0.5
    chosen = await servers.choose({"region": "eu"})
    assert chosen.id == big.id
    assert chosen.target_count == 1
    with pytest.raises(NoServerAvailable) as none:
        await servers.choose({"region": "ap"})
    assert none.value.status_code == 409
    assert none.value.error_type == "no_server"


async def test_rotate_keys(pool: asyncpg.Pool) -> None:
    old = ServerRepository(pool, cipher("a"))
    created = await old.create(server_spec("pg-rot", password="rot-admin-pw"))
    rotated = ServerRepository(pool, cipher("b"))
    assert await rotated.rotate_keys() == 1
    assert await rotated.rotate_keys() == 0
    only_b = CredentialCipher(KeyRing({"b": KEY_B}, active_key_id="b"))
    params = await ServerRepository(pool, only_b).admin_connection_params(created.id)
    assert params["password"] == "rot-admin-pw"


async def test_targets_find_their_server_by_id_or_name_and_inherit_its_sslmode(
    servers: ServerRepository, databases: DatabaseRepository
) -> None:
    server = await servers.create(server_spec("pg-tls", sslmode="verify-full"))
    by_id = await databases.create(target_spec("t-by-id"), server_id=server.id)
    assert (by_id.server_id, by_id.sslmode) == (server.id, "verify-full")
    named = target_spec("t-by-name").model_copy(update={"server": "pg-tls", "sslmode": "disable"})
    by_name = await databases.create(named)
    assert (by_name.server_id, by_name.sslmode) == (server.id, "disable")
    assert (await databases.connection_params(by_id.id))["ssl"] == "verify-full"
    assert (await databases.connection_params(by_name.id))["ssl"] == "disable"
    plain = await databases.create(target_spec("t-plain"))
    assert (plain.server_id, plain.sslmode) == (None, None)
    assert (await databases.connection_params(plain.id))["ssl"] is None
    with pytest.raises(NotFound):
        await databases.create(target_spec("t-nowhere").model_copy(update={"server": "nope"}))
    assert await servers.count_targets(server.id) == 2
