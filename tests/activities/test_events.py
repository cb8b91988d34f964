"""Registering a target from a ``database.created`` event (activities.events), on the real
catalog: a target on a registered server takes the server's TLS mode and budget, the same event
delivered twice is the same row, and an unknown server is refused."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from temporalio.testing import ActivityEnvironment

from activities.events import EventActivities
from cli.stack import EmbeddedPostgres
from common.catalog.assignments import AssignmentRepository
from common.catalog.databases import DatabaseRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.catalog.servers import ServerRepository
from common.crypto import CredentialCipher, KeyRing
from common.errors import NotFound
from common.settings import Settings
from models.events import DatabaseRegistration, RegisterDatabaseInput
from tests.conftest import TargetDatabase, server_spec


class Registrar:
    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self.cipher = CredentialCipher(KeyRing.from_settings(settings.crypto))
        self.databases = DatabaseRepository(pool, self.cipher)
        self.servers = ServerRepository(pool, self.cipher)
        self.activities = EventActivities(
            self.databases,
            self.servers,
            AssignmentRepository(pool),
            MigrationSetRepository(pool),
        )

    def event(self, target: TargetDatabase, **fields: object) -> RegisterDatabaseInput:
        context = f"event:{uuid.uuid4().hex}"
        registration = DatabaseRegistration.model_validate(
            {
                "name": f"ev-{uuid.uuid4().hex[:8]}",
                "host": target.host,
                "port": target.port,
                "database": target.database,
                "user": target.user,
                **fields,
            }
        )
        return RegisterDatabaseInput(
            run_id="register-1",
            event_id=uuid.uuid4().hex,
            event_source="/tests",
            database=registration,
            password_encrypted=self.cipher.encrypt(target.password, context=context),
            password_context=context,
        )


@pytest.fixture
def registrar(catalog_pool: asyncpg.Pool, settings: Settings) -> Registrar:
    return Registrar(catalog_pool, settings)


async def test_a_target_on_a_registered_server_takes_its_tls_mode(
    registrar: Registrar,
    catalog_pool: asyncpg.Pool,
    postgres: EmbeddedPostgres,
    target_database: TargetDatabase,
) -> None:
    server = await registrar.servers.create(server_spec(postgres))
    event = registrar.event(target_database, server=server.name)
    run = ActivityEnvironment().run
    created = await run(registrar.activities.register_database, event)
    assert created.created and created.name == event.database.name
    row = await catalog_pool.fetchrow(
        "SELECT server_id, sslmode FROM databases WHERE id = $1", created.database_id
    )
    assert row is not None
    assert (row["server_id"], row["sslmode"]) == (server.id, "disable")
    # The same event delivered again: the same row, nothing created.
    again = await run(registrar.activities.register_database, event)
    assert (again.database_id, again.created) == (created.database_id, False)


async def test_a_target_on_an_unknown_server_is_refused(
    registrar: Registrar, catalog_pool: asyncpg.Pool, target_database: TargetDatabase
) -> None:
    event = registrar.event(target_database, server=f"nowhere-{uuid.uuid4().hex[:6]}")
    with pytest.raises(NotFound):
        await ActivityEnvironment().run(registrar.activities.register_database, event)
    assert (
        await catalog_pool.fetchval(
            "SELECT count(*) FROM databases WHERE name = $1", event.database.name
        )
        == 0
    )
