"""Health activities: check a batch of targets (connect, latency, server version, each assigned
set's version from its own ledger table, schema fingerprint, drift against the reference of their
assigned set), store each snapshot and say which events are due; record once they went out.

The reference of a set at a version is the set replayed up to that version by the engine itself
in a scratch database on the catalog's server, fingerprinted, cached in the catalog, and dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from temporalio import activity

from activities.fingerprint import differences, schema_fingerprint
from activities.health_events import health_outcome
from activities.ledger import LEDGER_TABLE, ledger_name
from activities.migrations import MigrationActivities, heartbeating
from common import network_policy
from common.catalog.assignments import AssignmentRepository
from common.catalog.databases import DatabaseRepository
from common.catalog.health import HealthRepository, Reference
from common.catalog.migration_sets import MigrationSetRepository
from common.errors import NotFound, TenantflowError
from common.sql import quote_ident
from models.health import (
    MAX_DRIFT_OBJECTS,
    DriftReport,
    DriftSource,
    HealthBatchInput,
    HealthOutcome,
    ReportedState,
    SchemaFingerprint,
    SetVersion,
    TargetHealth,
)
from models.migrations import Migration, MigrationSetContent, TargetRunInput, version_key

log = logging.getLogger(__name__)

# Serialises reference builds of one (set, version) across workers.
REFERENCE_LOCK_KEY = "tenantflow:health-reference:"


def _describe(exc: BaseException) -> str:
    # PostgreSQL's and the OS's messages name hosts and users, never passwords.
    return f"{type(exc).__name__}: {exc}"[:500]


def chain_of(migrations: Sequence[Migration], version: str) -> str:
    """A hash of the set's versions and checksums up to ``version``: the reference's cache key,
    so a set whose content changed (a version withdrawn and re-registered) is replayed again."""
    digest = hashlib.sha256()
    for m in sorted(migrations, key=lambda m: version_key(m.version)):
        if version_key(m.version) <= version_key(version):
            digest.update(f"{m.version}:{m.checksum}\n".encode())
    return digest.hexdigest()


def scratch_name(key: tuple[str, str, str]) -> str:
    """The scratch database a reference of (set, version, chain) is built in."""
    return "tenantflow_ref_" + hashlib.sha256("\n".join(key).encode()).hexdigest()[:24]


class Probe:
    """What one connection to a target saw: ``versions`` maps each ledger table read to its
    current version."""

    def __init__(
        self,
        latency_ms: float,
        server_version: str,
        versions: dict[str, str | None],
        fp: SchemaFingerprint,
    ) -> None:
        self.latency_ms = latency_ms
        self.server_version = server_version
        self.versions = versions
        self.fingerprint = fp


async def probe(
    target: dict[str, Any],
    connect_timeout: float,
    ledgers: Sequence[str] = (LEDGER_TABLE,),
    excluded: Collection[str] = (LEDGER_TABLE,),
) -> Probe:
    """Connect (within ``connect_timeout``), time a round trip, read the server version, the
    current version (success rows) of each of the ``ledgers`` tables and the schema's
    fingerprint (``excluded``: every ledger table, left out of it)."""
    params = dict(target)
    schema = params.pop("schema") or "public"
    conn = await network_policy.connect(
        params,
        timeout=connect_timeout,
        server_settings={
            "application_name": "tenantflow:health",
            "search_path": quote_ident(schema),
            "statement_timeout": str(int(connect_timeout * 3000)),
        },
    )
    try:
        started = time.perf_counter()
        await conn.fetchval("SELECT 1")
        latency = round((time.perf_counter() - started) * 1000, 3)
        server_version = str(await conn.fetchval("SHOW server_version"))
        versions: dict[str, str | None] = {}
        for table in ledgers:
            ledger = ledger_name(schema, table)
            found: list[str] = []
            if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", ledger):
                found = [
                    r["version"]
                    for r in await conn.fetch(
                        f"SELECT version FROM {ledger} WHERE success"  # noqa: S608 - quoted
                    )
                ]
            versions[table] = max(found, key=version_key, default=None)
        fp = await schema_fingerprint(conn, schema, excluded)
    finally:
        await conn.close()
    return Probe(latency, server_version, versions, fp)


class HealthActivities:
    """Holds the repositories and the catalog's DSN (its server hosts the scratch databases)."""

    def __init__(
        self,
        databases: DatabaseRepository,
        sets: MigrationSetRepository,
        assignments: AssignmentRepository,
        health: HealthRepository,
        catalog_dsn: str | None,
    ) -> None:
        self._databases = databases
        self._sets = sets
        self._assignments = assignments
        self._health = health
        self._catalog_dsn = catalog_dsn
        self._migrator = MigrationActivities(databases, sets)
        self._building: dict[tuple[str, str, str], asyncio.Lock] = {}

    @activity.defn(name="check_health_batch")
    async def check_health_batch(self, batch: HealthBatchInput) -> list[HealthOutcome]:
        """Check every target of the batch at once; one target's failure is its own result."""
        ids = batch.database_ids
        try:
            targets: dict[uuid.UUID, dict[str, Any] | BaseException] = dict(
                await self._databases.connection_params_many(ids)
            )
        except TenantflowError:
            targets = {}
            for database_id in ids:
                try:
                    targets[database_id] = await self._databases.connection_params(database_id)
                except NotFound:
                    continue
                except TenantflowError as exc:
                    targets[database_id] = exc
        labels = await self._health.labels(ids)
        reported = await self._health.reported(ids)
        sets_cache: dict[str, MigrationSetContent] = {}
        # Every set's ledger table: none of them is part of a schema's own objects.
        ledgers = frozenset({LEDGER_TABLE, *(await self._sets.ledger_tables()).values()})

        async def one(database_id: uuid.UUID) -> HealthOutcome | None:
            target = targets.get(database_id)
            if target is None:
                return None  # deleted since the page was read
            health, objects = await self._check(
                database_id, target, labels.get(database_id, {}), batch, sets_cache, ledgers
            )
            await self._health.store(health, objects)
            return health_outcome(health, reported.get(database_id))

        async with heartbeating():
            found = await asyncio.gather(*(one(i) for i in ids), return_exceptions=True)
        outcomes: list[HealthOutcome] = []
        for database_id, item in zip(ids, found, strict=True):
            if isinstance(item, asyncio.CancelledError):
                raise item
            if isinstance(item, BaseException):
                log.error("health check of %s failed: %s", database_id, _describe(item))
                continue
            if item is not None:
                outcomes.append(item)
        return outcomes

    @activity.defn(name="mark_health_reported")
    async def mark_health_reported(self, states: list[ReportedState]) -> None:
        """Record that the events for these states were published."""
        await self._health.mark_reported(states)

    async def _check(
        self,
        database_id: uuid.UUID,
        target: dict[str, Any] | BaseException,
        labels: dict[str, str],
        batch: HealthBatchInput,
        sets_cache: dict[str, MigrationSetContent],
        ledgers: frozenset[str],
    ) -> tuple[TargetHealth, dict[str, str] | None]:
        now = datetime.now(UTC)
        if isinstance(target, BaseException):
            error = f"credentials: {_describe(target)}"
            return _unreachable(database_id, error, now, batch.run_id), None
        assigned = await self._assignments.for_labels(labels)
        for item in assigned:
            if item.set_name not in sets_cache:
                sets_cache[item.set_name] = await self._sets.content(item.set_name)
        # Each set's version is in its own ledger table; without a set, the default one's.
        tables = list(dict.fromkeys(sets_cache[i.set_name].ledger_table for i in assigned))
        try:
            seen = await probe(
                target, batch.connect_timeout_seconds, tables or [LEDGER_TABLE], ledgers
            )
        except network_policy.NetworkRefused as exc:
            refused = f"network_refused: {exc.message}"
            return _unreachable(database_id, refused, now, batch.run_id), None
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            return _unreachable(database_id, _describe(exc), now, batch.run_id), None
        sets: list[SetVersion] = []
        for item in assigned:
            content = sets_cache[item.set_name]
            version = seen.versions[content.ledger_table]
            latest = max((m.version for m in content.migrations), key=version_key, default=None)
            expected = item.version or latest
            behind = expected is not None and (
                version is None or version_key(version) < version_key(expected)
            )
            sets.append(
                SetVersion(
                    set_name=item.set_name, version=version, expected=expected, behind=behind
                )
            )
        drift = await self._drift(database_id, seen, sets, sets_cache, ledgers)
        # One ledger read (one set, sets sharing a table, or none): its version; several
        # ledgers have no one version, each set's is in ``sets``.
        only = next(iter(seen.versions.values())) if len(seen.versions) == 1 else None
        health = TargetHealth(
            database_id=database_id,
            reachable=True,
            latency_ms=seen.latency_ms,
            server_version=seen.server_version,
            ledger_version=only,
            sets=sets,
            behind_sets=[s.set_name for s in sets if s.behind],
            fingerprint=seen.fingerprint.hash,
            drift=drift,
            checked_at=now,
            run_id=batch.run_id,
        )
        return health, seen.fingerprint.objects

    async def _drift(
        self,
        database_id: uuid.UUID,
        seen: Probe,
        sets: list[SetVersion],
        sets_cache: dict[str, MigrationSetContent],
        ledgers: Collection[str],
    ) -> DriftReport:
        if not sets:
            return DriftReport(reason="no set is assigned to this target")
        if len(sets) > 1:
            return DriftReport(reason="several sets are assigned: drift is judged for one only")
        set_name, version = sets[0].set_name, sets[0].version
        if version is None:
            return DriftReport(set_name=set_name, reason="no version in the ledger yet")
        content = sets_cache[set_name]
        migrations = content.migrations
        if version not in {m.version for m in migrations}:
            return DriftReport(
                set_name=set_name, version=version, reason="the ledger's version is not in the set"
            )
        reference = await self.reference(
            set_name, version, migrations, content.ledger_table, ledgers
        )
        source = DriftSource.REFERENCE
        if reference.fingerprint is None:
            peers = await self._health.majority(set_name, version, database_id)
            if peers is None:
                return DriftReport(
                    set_name=set_name,
                    version=version,
                    reason=f"no reference ({reference.error}) and no majority among peers",
                )
            reference, source = peers, DriftSource.MAJORITY
        found = (
            []
            if reference.fingerprint == seen.fingerprint.hash
            else differences(reference.objects, seen.fingerprint.objects)
        )
        return DriftReport(
            drifted=bool(found),
            source=source,
            set_name=set_name,
            version=version,
            differences=found[:MAX_DRIFT_OBJECTS],
            total_differences=len(found),
        )

    async def reference(
        self,
        set_name: str,
        version: str,
        migrations: Sequence[Migration],
        ledger_table: str = LEDGER_TABLE,
        ledgers: Collection[str] = (LEDGER_TABLE,),
    ) -> Reference:
        """The reference of ``set_name`` at ``version``: cached, or built now (once) with the
        set's ``ledger_table``; ``ledgers`` (every set's ledger table) is not fingerprinted."""
        chain = chain_of(migrations, version)
        key = (set_name, version, chain)
        lock = self._building.setdefault(key, asyncio.Lock())
        async with lock:
            cached = await self._health.reference(*key)
            if cached is not None:
                return cached
            async with self._health.pool.acquire() as conn:
                # Across workers: the second one waits, then finds the first one's result.
                lock_key = f"{REFERENCE_LOCK_KEY}{set_name}:{version}:{chain}"
                await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", lock_key)
                try:
                    cached = await self._health.reference(*key)
                    if cached is not None:
                        return cached
                    built = await self._replay(
                        conn, key, migrations, ledger_table, {ledger_table, *ledgers}
                    )
                    if built.cacheable:
                        await self._health.save_reference(set_name, version, chain, built)
                    return built
                finally:
                    await conn.execute(
                        "SELECT pg_advisory_unlock(hashtextextended($1, 0))", lock_key
                    )

    async def _replay(
        self,
        conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
        key: tuple[str, str, str],
        migrations: Sequence[Migration],
        ledger_table: str,
        ledgers: Collection[str],
    ) -> Reference:
        """Replay the set up to the version with the engine in a scratch database, fingerprint
        it and drop it. Called under the key's advisory lock."""
        set_name, version, _ = key
        if self._catalog_dsn is None:
            return Reference(None, {}, "no catalog DSN to build references with", cacheable=False)
        # Named after the key: what a worker killed mid-build left behind is dropped by the
        # next build of the same reference (nothing was cached, so there is one).
        scratch = scratch_name(key)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(scratch)} WITH (FORCE)")
            await conn.execute(f"CREATE DATABASE {quote_ident(scratch)}")
        except asyncpg.PostgresError as exc:
            return Reference(
                None, {}, f"cannot create a scratch database: {_describe(exc)}", cacheable=False
            )
        try:
            target = {"dsn": self._catalog_dsn, "database": scratch, "schema": "public"}
            params = TargetRunInput(
                run_id=f"health-reference-{set_name}-{version}"[:120],
                database_id=uuid.uuid4(),
                set_name=set_name,
                target_version=version,
                lock_timeout_ms=30_000,
            )
            try:
                result = await self._migrator.run_one(
                    params, migrations, dict(target), ledger_table=ledger_table
                )
            except (asyncpg.PostgresError, OSError, TimeoutError, Exception) as exc:
                return Reference(None, {}, f"replay failed: {_describe(exc)}")
            if result.failure is not None:
                failure = result.failure
                return Reference(
                    None, {}, f"replay failed at {failure.version}: {failure.message}"[:500]
                )
            scratch_conn = await asyncpg.connect(self._catalog_dsn, database=scratch, timeout=30)
            try:
                fp = await schema_fingerprint(scratch_conn, "public", ledgers)
            finally:
                await scratch_conn.close()
            return Reference(fp.hash, fp.objects, None)
        finally:
            await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(scratch)} WITH (FORCE)")


def _unreachable(database_id: uuid.UUID, error: str, now: datetime, run_id: str) -> TargetHealth:
    return TargetHealth(
        database_id=database_id, reachable=False, error=error, checked_at=now, run_id=run_id
    )
