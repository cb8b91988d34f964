"""Catalog access for servers: PostgreSQL servers tenantflow may create roles, databases and
schemas on. The admin password is encrypted here, before it reaches a table, and decrypted only
for code that connects as the admin (``admin_connection_params``)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg

from common.catalog.databases import decode_cursor, encode_cursor
from common.catalog.keys import rotate_column
from common.crypto import CredentialCipher
from common.errors import Conflict, NotFound
from models.servers import Server, ServerCreate, ServerPage, ServerUpdate

_COLUMNS = (
    "s.id, s.name, s.host, s.port, s.admin_user, s.sslmode, s.maintenance_database, "
    "s.max_connections, s.labels, s.created_at, s.updated_at, "
    "(SELECT count(*) FROM databases d WHERE d.server_id = s.id) AS target_count"
)
# Columns a PATCH may set directly (the password goes through the cipher; labels as jsonb).
_PLAIN_FIELDS = (
    "name",
    "host",
    "port",
    "admin_user",
    "sslmode",
    "maintenance_database",
    "max_connections",
)


class NoServerAvailable(Conflict):
    """No registered server carries every label of the selector."""

    error_type = "no_server"


def admin_password_context(server_id: uuid.UUID) -> str:
    """AES-GCM associated data: a ciphertext only decrypts for the server it was written for."""
    return f"server:{server_id}:admin_password"


def _row_to_model(row: asyncpg.Record) -> Server:
    labels = row["labels"]
    return Server(
        id=row["id"],
        name=row["name"],
        host=row["host"],
        port=row["port"],
        admin_user=row["admin_user"],
        sslmode=row["sslmode"],
        maintenance_database=row["maintenance_database"],
        max_connections=row["max_connections"],
        labels=json.loads(labels) if isinstance(labels, str) else dict(labels),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        target_count=row["target_count"],
    )


def _name_taken(name: str) -> Conflict:
    return Conflict(f"a server named {name!r} is already registered", details={"name": name})


class ServerRepository:
    """CRUD on the ``servers`` table of the catalog, plus placement (``choose``)."""

    def __init__(self, pool: asyncpg.Pool, cipher: CredentialCipher) -> None:
        self.pool = pool
        self.cipher = cipher

    async def create(self, spec: ServerCreate) -> Server:
        """Insert a server; its admin password is encrypted under the active key."""
        server_id = uuid.uuid4()
        encrypted = self.cipher.encrypt(
            spec.admin_password.get_secret_value(), context=admin_password_context(server_id)
        )
        try:
            await self.pool.execute(
                "INSERT INTO servers (id, name, host, port, admin_user, admin_password_encrypted, "
                "admin_password_key_id, sslmode, maintenance_database, max_connections, labels) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb)",
                server_id,
                spec.name,
                spec.host,
                spec.port,
                spec.admin_user,
                encrypted,
                self.cipher.key_id_of(encrypted),
                spec.sslmode,
                spec.maintenance_database,
                spec.max_connections,
                json.dumps(spec.labels),
            )
        except asyncpg.UniqueViolationError:
            raise _name_taken(spec.name) from None
        return await self.get(server_id)

    async def get(self, server_id: uuid.UUID) -> Server:
        """One server, or ``NotFound``."""
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM servers s WHERE s.id = $1",  # noqa: S608 - constant columns
            server_id,
        )
        if row is None:
            raise NotFound(f"no server {server_id}", details={"id": str(server_id)})
        return _row_to_model(row)

    async def get_by_name(self, name: str) -> Server:
        """One server by its unique name, or ``NotFound``."""
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM servers s WHERE s.name = $1",  # noqa: S608 - constant columns
            name,
        )
        if row is None:
            raise NotFound(f"no server named {name[:128]!r}", details={"name": name[:128]})
        return _row_to_model(row)

    async def list(
        self, *, labels: dict[str, str] | None = None, limit: int = 100, cursor: str | None = None
    ) -> ServerPage:
        """Servers whose labels contain ``labels``, ordered by name, keyset-paginated."""
        after = decode_cursor(cursor) if cursor else None
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM servers s "  # noqa: S608 - constant column list
            "WHERE s.labels @> $1::jsonb AND ($2::text IS NULL OR s.name > $2) "
            "ORDER BY s.name LIMIT $3",
            json.dumps(labels or {}),
            after,
            limit + 1,
        )
        items = [_row_to_model(r) for r in rows[:limit]]
        next_cursor = encode_cursor(items[-1].name) if len(rows) > limit else None
        return ServerPage(items=items, next_cursor=next_cursor)

    async def update(self, server_id: uuid.UUID, changes: ServerUpdate) -> Server:
        """Apply the fields present in ``changes``; a new admin password is re-encrypted."""
        fields = changes.model_fields_set
        assignments: list[str] = []
        values: list[Any] = [server_id]
        for field in _PLAIN_FIELDS:
            value = getattr(changes, field)
            if field in fields and value is not None:
                values.append(value)
                assignments.append(f"{field} = ${len(values)}")
        if "labels" in fields and changes.labels is not None:
            values.append(json.dumps(changes.labels))
            assignments.append(f"labels = ${len(values)}::jsonb")
        if "admin_password" in fields and changes.admin_password is not None:
            encrypted = self.cipher.encrypt(
                changes.admin_password.get_secret_value(),
                context=admin_password_context(server_id),
            )
            values.extend([encrypted, self.cipher.key_id_of(encrypted)])
            assignments.append(
                f"admin_password_encrypted = ${len(values) - 1}, "
                f"admin_password_key_id = ${len(values)}"
            )
        assignments.append("updated_at = now()")
        try:
            result = await self.pool.execute(
                f"UPDATE servers SET {', '.join(assignments)} WHERE id = $1",  # noqa: S608 - fixed column names
                *values,
            )
        except asyncpg.UniqueViolationError:
            raise _name_taken(str(changes.name)) from None
        if result == "UPDATE 0":
            raise NotFound(f"no server {server_id}", details={"id": str(server_id)})
        return await self.get(server_id)

    async def delete(self, server_id: uuid.UUID) -> None:
        """Forget a server (the server itself is untouched); ``Conflict`` while targets
        reference it, so no target is left pointing at credentials that are gone."""
        try:
            result = await self.pool.execute("DELETE FROM servers WHERE id = $1", server_id)
        except (asyncpg.RestrictViolationError, asyncpg.ForeignKeyViolationError):
            count = await self.count_targets(server_id)
            raise Conflict(
                f"server {server_id} still has {count} registered target(s)",
                details={"id": str(server_id), "target_count": count},
            ) from None
        if result == "DELETE 0":
            raise NotFound(f"no server {server_id}", details={"id": str(server_id)})

    async def count_targets(self, server_id: uuid.UUID) -> int:
        """How many rows of ``databases`` reference the server."""
        found: int = await self.pool.fetchval(
            "SELECT count(*) FROM databases WHERE server_id = $1", server_id
        )
        return found

    async def choose(self, selector: dict[str, str]) -> Server:
        """The least-loaded server whose labels contain ``selector``: fewest targets relative to
        its ``max_connections`` (ties by name); ``NoServerAvailable`` (409) when none match."""
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM servers s WHERE s.labels @> $1::jsonb "  # noqa: S608 - constant columns
            "ORDER BY (SELECT count(*) FROM databases d WHERE d.server_id = s.id)::float8 "
            "/ s.max_connections, s.name LIMIT 1",
            json.dumps(selector),
        )
        if row is None:
            raise NoServerAvailable(
                "no registered server matches the selector", details={"selector": selector}
            )
        return _row_to_model(row)

    async def admin_connection_params(
        self, server_id: uuid.UUID, database: str | None = None
    ) -> dict[str, Any]:
        """asyncpg ``connect`` keyword arguments for the admin, password decrypted; the
        database defaults to the server's maintenance database."""
        row = await self.pool.fetchrow(
            "SELECT host, port, admin_user, admin_password_encrypted, sslmode, "
            "maintenance_database FROM servers WHERE id = $1",
            server_id,
        )
        if row is None:
            raise NotFound(f"no server {server_id}", details={"id": str(server_id)})
        return {
            "host": row["host"],
            "port": row["port"],
            "database": database or row["maintenance_database"],
            "user": row["admin_user"],
            "password": self.cipher.decrypt(
                row["admin_password_encrypted"], context=admin_password_context(server_id)
            ),
            "ssl": row["sslmode"],
        }

    async def rotate_keys(self, *, batch_size: int = 500) -> int:
        """Re-encrypt every admin password not under the active key; return how many changed."""
        return await rotate_column(
            self.pool,
            self.cipher,
            table="servers",
            column="admin_password_encrypted",
            key_column="admin_password_key_id",
            context=admin_password_context,
            batch_size=batch_size,
        )
