"""Activities of ``RegisterDatabaseWorkflow``: register the event's target in the catalog
(idempotently) and read the sets its labels are assigned (refused when two of them keep their
ledgers in one table). The password arrives encrypted and is decrypted only here, never logged or
returned."""

from __future__ import annotations

import hmac
import uuid

from pydantic import SecretStr
from temporalio import activity
from temporalio.exceptions import ApplicationError

from common.catalog.assignments import AssignmentRepository
from common.catalog.databases import DatabaseRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.catalog.servers import ServerRepository
from common.errors import Conflict
from models.databases import DatabaseCreate
from models.events import (
    AssignedSets,
    AssignedSetsInput,
    RegisterDatabaseInput,
    RegisteredTarget,
)

# What "the same connection" means: the same place, the same login and the same password.
_CONNECTION_FIELDS = ("host", "port", "database", "schema", "user")


def event_password_context(workflow_id: str) -> str:
    """AES-GCM associated data of an event's password: it decrypts only for its own run."""
    return f"event:{workflow_id}:password"


class EventActivities:
    """Holds the catalog repositories the event activities use."""

    def __init__(
        self,
        databases: DatabaseRepository,
        servers: ServerRepository,
        assignments: AssignmentRepository,
        sets: MigrationSetRepository,
    ) -> None:
        self._databases = databases
        self._servers = servers
        self._assignments = assignments
        self._sets = sets

    @activity.defn(name="register_database")
    async def register_database(self, params: RegisterDatabaseInput) -> RegisteredTarget:
        """Register the target; the same name with the same connection is the same row (a
        retried or redelivered registration changes nothing). The same name with another
        connection fails, non-retryably, naming the fields that differ (never values)."""
        wanted = params.database
        password = self._databases.cipher.decrypt(
            params.password_encrypted, context=params.password_context
        )
        spec = DatabaseCreate.model_validate(
            {**wanted.model_dump(), "password": SecretStr(password)}
        )
        server_id: uuid.UUID | None = None
        if spec.server is not None:
            server = await self._servers.get_by_name(spec.server)  # NotFound: not retried
            server_id = server.id
            if spec.sslmode is None:
                spec = spec.model_copy(update={"sslmode": server.sslmode})
        try:
            created = await self._databases.create(spec, server_id=server_id)
        except Conflict:
            return await self._same_or_conflict(spec, password)
        activity.logger.info(
            "target registered from an event",
            extra={"database": created.name, "event_id": params.event_id},
        )
        return RegisteredTarget(
            database_id=created.id, name=created.name, created=True, labels=created.labels
        )

    async def _same_or_conflict(self, spec: DatabaseCreate, password: str) -> RegisteredTarget:
        database_id = await self._databases.pool.fetchval(
            "SELECT id FROM databases WHERE name = $1", spec.name
        )
        if database_id is None:  # deleted meanwhile: let the retry register it
            raise ApplicationError(f"database {spec.name!r} vanished while registering")
        existing = await self._databases.get(database_id)
        stored = await self._databases.connection_params(database_id)
        given = {
            "host": spec.host,
            "port": spec.port,
            "database": spec.database,
            "schema": spec.schema_name,
            "user": spec.user,
        }
        differing = [field for field in _CONNECTION_FIELDS if stored[field] != given[field]]
        if not hmac.compare_digest(str(stored["password"]).encode(), password.encode()):
            differing.append("password")
        if differing:
            raise ApplicationError(
                f"a database named {spec.name!r} is already registered with another "
                f"connection ({', '.join(differing)} differ)",
                {"name": spec.name, "differing": differing},
                type="Conflict",
                non_retryable=True,
            )
        return RegisteredTarget(
            database_id=existing.id, name=existing.name, created=False, labels=existing.labels
        )

    @activity.defn(name="assigned_sets")
    async def assigned_sets(self, params: AssignedSetsInput) -> AssignedSets:
        """The sets assigned to targets with these labels, by set name; ``InvalidInput`` (not
        retried) when two of them keep their ledgers in one table, before any is applied."""
        items = await self._assignments.for_labels(params.labels)
        await self._sets.check_separate_ledgers([item.set_name for item in items])
        return AssignedSets(items=items)
