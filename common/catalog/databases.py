"""Catalog access for targets. Passwords are encrypted here, before they reach a table, and
decrypted only inside activities that connect to the target."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from common.catalog.keys import rotate_column
from common.crypto import CredentialCipher
from common.errors import Conflict, InvalidInput, NotFound, TenantflowError
from models.databases import Database, DatabaseCreate, DatabasePage, DatabaseUpdate
from models.health import HealthFilter

_COLUMNS = (
    "id, name, tenant_id, host, port, database, schema, username, labels, password_key_id, "
    "server_id, sslmode, created_at, updated_at"
)


# PATCH fields stored as they come (model field -> column).
_UPDATABLE = {
    "name": "name",
    "tenant_id": "tenant_id",
    "host": "host",
    "port": "port",
    "database": "database",
    "schema_name": "schema",
    "user": "username",
    "sslmode": "sslmode",
}


def password_context(database_id: uuid.UUID) -> str:
    """AES-GCM associated data: a ciphertext only decrypts for the row it was written for."""
    return f"database:{database_id}:password"


def _row_to_model(row: asyncpg.Record) -> Database:
    labels = row["labels"]
    return Database(
        id=row["id"],
        name=row["name"],
        tenant_id=row["tenant_id"],
        host=row["host"],
        port=row["port"],
        database=row["database"],
        schema_name=row["schema"],
        user=row["username"],
        labels=json.loads(labels) if isinstance(labels, str) else dict(labels),
        password_key_id=row["password_key_id"],
        server_id=row["server_id"],
        sslmode=row["sslmode"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class DatabaseRepository:
    """CRUD on the ``databases`` table of the catalog."""

    def __init__(self, pool: asyncpg.Pool, cipher: CredentialCipher) -> None:
        self.pool = pool
        self.cipher = cipher

    async def create(self, spec: DatabaseCreate, *, server_id: uuid.UUID | None = None) -> Database:
        """Insert a target; its password is encrypted under the active key. The registered
        server it lives on comes from ``server_id`` (provisioning) or ``spec.server`` (a name);
        an unknown one is ``NotFound``. Without its own ``sslmode`` a target on a server uses
        the server's."""
        server_id, sslmode = await self._server_and_sslmode(spec.server, server_id, spec.sslmode)
        database_id = uuid.uuid4()
        encrypted = self.cipher.encrypt(
            spec.password.get_secret_value(), context=password_context(database_id)
        )
        try:
            row = await self.pool.fetchrow(
                f"INSERT INTO databases (id, name, tenant_id, host, port, database, schema, "  # noqa: S608 - constant column list
                f"username, password_encrypted, password_key_id, labels, server_id, sslmode) "
                f"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13) "
                f"RETURNING {_COLUMNS}",
                database_id,
                spec.name,
                spec.tenant_id,
                spec.host,
                spec.port,
                spec.database,
                spec.schema_name,
                spec.user,
                encrypted,
                self.cipher.key_id_of(encrypted),
                json.dumps(spec.labels),
                server_id,
                sslmode,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(
                f"a database named {spec.name!r} is already registered",
                details={"name": spec.name},
            ) from None
        except asyncpg.ForeignKeyViolationError:
            raise NotFound(
                f"no server {server_id}", details={"server_id": str(server_id)}
            ) from None
        assert row is not None
        return _row_to_model(row)

    async def get(self, database_id: uuid.UUID) -> Database:
        """One target, or ``NotFound``."""
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM databases WHERE id = $1",  # noqa: S608 - constant columns
            database_id,
        )
        if row is None:
            raise NotFound(f"no database {database_id}", details={"id": str(database_id)})
        return _row_to_model(row)

    async def list(
        self,
        *,
        labels: dict[str, str] | None = None,
        tenant_id: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        server: str | None = None,
        health: HealthFilter | None = None,
    ) -> DatabasePage:
        """Targets whose labels contain ``labels`` (and, with ``server``, that live on the
        server of that name; with ``health``, whose latest health snapshot is unreachable,
        drifted or behind), ordered by name, keyset-paginated."""
        after = decode_cursor(cursor) if cursor else None
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM databases "  # noqa: S608 - constant column list
            "WHERE labels @> $1::jsonb AND ($2::text IS NULL OR tenant_id = $2) "
            "AND ($3::text IS NULL OR name > $3) "
            "AND ($5::text IS NULL OR server_id = (SELECT id FROM servers WHERE name = $5)) "
            "AND ($6::text IS NULL OR EXISTS (SELECT FROM target_health h "
            "WHERE h.database_id = databases.id AND CASE $6 WHEN 'unreachable' THEN "
            "NOT h.reachable WHEN 'drifted' THEN h.drifted ELSE h.behind_sets <> '{}' END)) "
            "ORDER BY name LIMIT $4",
            json.dumps(labels or {}),
            tenant_id,
            after,
            limit + 1,
            server,
            None if health is None else health.value,
        )
        items = [_row_to_model(r) for r in rows[:limit]]
        next_cursor = encode_cursor(items[-1].name) if len(rows) > limit else None
        return DatabasePage(items=items, next_cursor=next_cursor)

    async def names(self, database_ids: Sequence[uuid.UUID]) -> dict[str, str]:
        """Names of the given targets by id (unknown ids are left out)."""
        rows = await self.pool.fetch(
            "SELECT id, name FROM databases WHERE id = ANY($1::uuid[])", list(database_ids)
        )
        return {str(row["id"]): row["name"] for row in rows}

    async def _server_and_sslmode(
        self, name: str | None, server_id: uuid.UUID | None, sslmode: str | None
    ) -> tuple[uuid.UUID | None, str | None]:
        """The server a target is registered on (by id, else by name) and the sslmode it
        connects with (its own, else the server's); ``NotFound`` for an unknown server."""
        if server_id is None and name is None:
            return None, sslmode
        row = await self.pool.fetchrow(
            "SELECT id, sslmode FROM servers WHERE id = $1 OR ($1 IS NULL AND name = $2)",
            server_id,
            name,
        )
        if row is None:
            details = {"server_id": str(server_id)} if server_id else {"server": name}
            raise NotFound(f"no server {server_id or repr(name)}", details=details)
        return row["id"], sslmode or row["sslmode"]

    async def update(self, database_id: uuid.UUID, changes: DatabaseUpdate) -> Database:
        """Apply the fields present in ``changes``; a new password is re-encrypted under the
        active key. ``server`` names a registered server (``NotFound`` if unknown); ``null``
        detaches the target."""
        fields = changes.model_fields_set
        server_id = None
        if changes.server is not None:
            server_id, _ = await self._server_and_sslmode(changes.server, None, None)
        values: list[Any] = [database_id]
        assignments: list[str] = []

        def assign(column: str, value: object, cast: str = "") -> None:
            values.append(value)
            assignments.append(f"{column} = ${len(values)}{cast}")

        for field, column in _UPDATABLE.items():
            if field in fields:
                assign(column, getattr(changes, field))
        if "labels" in fields:
            assign("labels", json.dumps(changes.labels), "::jsonb")
        if "server" in fields:
            assign("server_id", server_id)
        if "password" in fields and changes.password is not None:
            encrypted = self.cipher.encrypt(
                changes.password.get_secret_value(), context=password_context(database_id)
            )
            assign("password_encrypted", encrypted)
            assign("password_key_id", self.cipher.key_id_of(encrypted))
        assignments.append("updated_at = now()")
        try:
            row = await self.pool.fetchrow(
                f"UPDATE databases SET {', '.join(assignments)} WHERE id = $1 "  # noqa: S608 - fixed columns
                f"RETURNING {_COLUMNS}",
                *values,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(
                f"a database named {changes.name!r} is already registered",
                details={"name": changes.name},
            ) from None
        except asyncpg.ForeignKeyViolationError:
            raise NotFound(
                f"no server {server_id}", details={"server_id": str(server_id)}
            ) from None
        if row is None:
            raise NotFound(f"no database {database_id}", details={"id": str(database_id)})
        return _row_to_model(row)

    async def delete(self, database_id: uuid.UUID) -> None:
        """Remove a target from the catalog (the database itself is untouched)."""
        result = await self.pool.execute("DELETE FROM databases WHERE id = $1", database_id)
        if result == "DELETE 0":
            raise NotFound(f"no database {database_id}", details={"id": str(database_id)})

    async def connection_params(self, database_id: uuid.UUID) -> dict[str, Any]:
        """asyncpg ``connect`` keyword arguments, password decrypted (activities only)."""
        found = await self.connection_params_many([database_id])
        if database_id not in found:
            raise NotFound(f"no database {database_id}", details={"id": str(database_id)})
        return found[database_id]

    async def connection_params_many(
        self, database_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, dict[str, Any]]:
        """``connection_params`` for several targets in one catalog query (a fleet batch);
        ids that are not in the catalog are absent from the answer."""
        rows = await self.pool.fetch(
            "SELECT id, host, port, database, schema, username, password_encrypted, sslmode "
            "FROM databases WHERE id = ANY($1::uuid[])",
            list(database_ids),
        )
        return {
            row["id"]: {
                "host": row["host"],
                "port": row["port"],
                "database": row["database"],
                "user": row["username"],
                "password": self.cipher.decrypt(
                    row["password_encrypted"], context=password_context(row["id"])
                ),
                "schema": row["schema"],
                # None leaves asyncpg's default (PGSSLMODE, else prefer).
                "ssl": row["sslmode"],
            }
            for row in rows
        }

    async def connection_params_each(
        self, database_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, dict[str, Any] | TenantflowError]:
        """``connection_params_many``; when one credential cannot be decrypted, each target is
        read alone, so that only its own entry is the error (unknown ids stay absent)."""
        try:
            return dict(await self.connection_params_many(database_ids))
        except TenantflowError:
            pass
        found: dict[uuid.UUID, dict[str, Any] | TenantflowError] = {}
        for database_id in database_ids:
            try:
                found[database_id] = await self.connection_params(database_id)
            except NotFound:
                continue
            except TenantflowError as exc:
                found[database_id] = exc
        return found

    async def rotate_keys(self, *, batch_size: int = 500) -> int:
        """Re-encrypt every password not under the active key; return how many changed."""
        return await rotate_column(
            self.pool,
            self.cipher,
            table="databases",
            column="password_encrypted",
            key_column="password_key_id",
            context=password_context,
            batch_size=batch_size,
        )


def encode_cursor(name: str) -> str:
    """An opaque keyset cursor: the last name of a page, base64url without padding."""
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The name inside a cursor from ``encode_cursor``; ``InvalidInput`` when it is not one."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("invalid cursor", details={"cursor": cursor[:64]}) from None
