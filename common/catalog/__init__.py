"""The catalog: tenantflow's own control-plane database.

``open_catalog`` creates the asyncpg pool (retrying while the server starts) and brings the
catalog's schema up to date from the versioned SQL files in ``sql/``. The apply is idempotent and
serialised by an advisory lock, so several gateways and workers may start at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from importlib import resources

import asyncpg

from common.errors import DependencyUnavailable, TenantflowError
from common.settings import CatalogSettings

log = logging.getLogger(__name__)

# Any fixed 64-bit number works; it only has to differ from the locks tenants' migrations take.
CATALOG_SCHEMA_LOCK = 0x7465_6E61_6E74_0001
_FILE_PATTERN = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

Pool = asyncpg.Pool  # re-exported for type hints elsewhere


class CatalogSchemaError(TenantflowError):
    """The catalog's recorded schema disagrees with the SQL files shipped with this version."""

    error_type = "catalog_schema_error"


@dataclass(frozen=True)
class CatalogMigration:
    """One versioned SQL file of the catalog's own schema."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """sha256 of the file's text with line endings and trailing blanks normalised."""
        normalised = "\n".join(line.rstrip() for line in self.sql.strip().splitlines())
        return hashlib.sha256(normalised.encode()).hexdigest()


def load_catalog_migrations() -> list[CatalogMigration]:
    """The catalog's migrations shipped in this package, ordered by version."""
    found: list[CatalogMigration] = []
    for entry in resources.files(__package__).joinpath("sql").iterdir():
        match = _FILE_PATTERN.match(entry.name)
        if match is None:
            continue
        found.append(
            CatalogMigration(int(match["version"]), match["name"], entry.read_text("utf-8"))
        )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise CatalogSchemaError(
            "duplicate catalog migration versions", details={"versions": versions}
        )
    return found


async def apply_catalog_schema(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    migrations: list[CatalogMigration] | None = None,
) -> list[int]:
    """Apply pending catalog migrations; return the versions applied by this call."""
    migrations = load_catalog_migrations() if migrations is None else migrations
    applied_now: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", CATALOG_SCHEMA_LOCK)
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS tenantflow_catalog_schema (
                version     integer PRIMARY KEY,
                name        text        NOT NULL,
                checksum    text        NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        rows = await conn.fetch("SELECT version, checksum FROM tenantflow_catalog_schema")
        recorded = {r["version"]: r["checksum"] for r in rows}
        for migration in migrations:
            known = recorded.get(migration.version)
            if known is not None:
                if known != migration.checksum:
                    raise CatalogSchemaError(
                        f"catalog migration {migration.version} ({migration.name}) was changed "
                        "after it was applied",
                        details={
                            "version": migration.version,
                            "recorded": known,
                            "shipped": migration.checksum,
                        },
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO tenantflow_catalog_schema (version, name, checksum) "
                    "VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied_now.append(migration.version)
            log.info(
                "catalog migration applied",
                extra={"version": migration.version, "migration": migration.name},
            )
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", CATALOG_SCHEMA_LOCK)
    return applied_now


async def create_catalog_pool(settings: CatalogSettings) -> asyncpg.Pool:
    """Connect to the catalog, retrying for ``startup_retry_seconds`` while it is not up yet."""
    deadline = time.monotonic() + settings.startup_retry_seconds
    delay = 0.2
    while True:
        try:
            pool: asyncpg.Pool = await asyncpg.create_pool(
                settings.dsn.get_secret_value(),
                min_size=settings.min_pool_size,
                max_size=settings.max_pool_size,
                timeout=settings.connect_timeout_seconds,
                command_timeout=60,
            )
            return pool
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            # The exception text of a failed connect can echo the DSN: log only its class.
            if time.monotonic() >= deadline:
                raise catalog_unreachable(settings, exc) from None
            log.warning(
                "catalog not reachable yet, retrying",
                extra={"cause": type(exc).__name__, "retry_in_seconds": delay},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def open_catalog(settings: CatalogSettings) -> asyncpg.Pool:
    """Create the pool and bring the catalog schema up to date."""
    pool = await create_catalog_pool(settings)
    try:
        async with pool.acquire() as conn:
            await apply_catalog_schema(conn)
    except BaseException:
        await pool.close()
        raise
    return pool


async def ping_catalog(pool: asyncpg.Pool, within_seconds: float) -> None:
    """Raise ``DependencyUnavailable`` unless the catalog answers ``SELECT 1`` in time."""
    try:
        async with asyncio.timeout(within_seconds):
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise DependencyUnavailable(
            "the catalog database does not answer",
            details={"dependency": "catalog", "cause": type(exc).__name__},
        ) from None


def catalog_unreachable(settings: CatalogSettings, exc: BaseException) -> DependencyUnavailable:
    """The error for a catalog that cannot be reached: the DSN only redacted and the cause's
    class only (the text of a failed connect can echo the DSN)."""
    return DependencyUnavailable(
        "the catalog database is unreachable",
        details={
            "dependency": "catalog",
            "dsn": settings.redacted_dsn(),
            "cause": type(exc).__name__,
        },
    )
