"""Catalog access for fleet health: each target's latest snapshot, what its events last said,
and the cached reference fingerprints of sets replayed in scratch databases."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from common.errors import NotFound
from models.health import (
    DriftedTarget,
    DriftReport,
    DriftSummary,
    DriftVersion,
    ReportedState,
    SetVersion,
    TargetHealth,
)
from models.migrations import version_key

_COLUMNS = (
    "database_id, reachable, error, latency_ms, server_version, ledger_version, sets, "
    "behind_sets, fingerprint, drift, checked_at, run_id"
)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _row_to_model(row: asyncpg.Record) -> TargetHealth:
    return TargetHealth(
        database_id=row["database_id"],
        reachable=row["reachable"],
        error=row["error"],
        latency_ms=row["latency_ms"],
        server_version=row["server_version"],
        ledger_version=row["ledger_version"],
        sets=[SetVersion.model_validate(s) for s in _json(row["sets"])],
        behind_sets=list(row["behind_sets"]),
        fingerprint=row["fingerprint"],
        drift=DriftReport.model_validate(_json(row["drift"]) or {}),
        checked_at=row["checked_at"],
        run_id=row["run_id"],
    )


class Reference:
    """A cached reference: the fingerprint of a set replayed up to a version, or why not."""

    def __init__(
        self,
        fingerprint: str | None,
        objects: dict[str, str],
        error: str | None,
        *,
        cacheable: bool = True,
    ) -> None:
        self.fingerprint = fingerprint
        self.objects = objects
        self.error = error
        # A failure of the environment (no scratch database) is tried again next time; a set
        # that does not replay will not replay the next time either.
        self.cacheable = cacheable


class HealthRepository:
    """The ``target_health`` and ``health_references`` tables."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def latest(self, database_id: uuid.UUID) -> TargetHealth:
        """The target's latest snapshot; ``NotFound`` for an unknown target or one not yet
        checked."""
        row = await self.pool.fetchrow(
            f"SELECT d.id AS known, {_COLUMNS} FROM databases d "  # noqa: S608 - constant
            "LEFT JOIN target_health h ON h.database_id = d.id WHERE d.id = $1",
            database_id,
        )
        if row is None:
            raise NotFound(f"no database {database_id}", details={"id": str(database_id)})
        if row["database_id"] is None:
            raise NotFound(
                f"database {database_id} has not been checked yet",
                details={"id": str(database_id), "reason": "not_checked"},
            )
        return _row_to_model(row)

    async def labels(self, database_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, str]]:
        """Each target's labels (what its assignments are resolved from)."""
        rows = await self.pool.fetch(
            "SELECT id, labels FROM databases WHERE id = ANY($1::uuid[])", list(database_ids)
        )
        return {r["id"]: dict(_json(r["labels"])) for r in rows}

    async def reported(self, database_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, ReportedState]:
        """What the events last sent for each target said (absent: never checked)."""
        rows = await self.pool.fetch(
            "SELECT database_id, reported_reachable, reported_drifted, events_sent "
            "FROM target_health WHERE database_id = ANY($1::uuid[])",
            list(database_ids),
        )
        return {
            r["database_id"]: ReportedState(
                database_id=r["database_id"],
                reachable=r["reported_reachable"],
                drifted=r["reported_drifted"],
                events_sent=r["events_sent"],
            )
            for r in rows
        }

    async def store(self, health: TargetHealth, objects: dict[str, str] | None) -> None:
        """Replace the target's snapshot (a target deleted meanwhile is skipped); the reported
        state stays as it was."""
        await self.pool.execute(
            "INSERT INTO target_health (database_id, reachable, error, latency_ms, server_version,"
            " ledger_version, sets, behind_sets, fingerprint, objects, drift, drifted, checked_at,"
            " run_id) SELECT $1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10::jsonb, $11::jsonb,"
            " $12, $13, $14 WHERE EXISTS (SELECT FROM databases WHERE id = $1) "
            "ON CONFLICT (database_id) DO UPDATE SET reachable = EXCLUDED.reachable,"
            " error = EXCLUDED.error, latency_ms = EXCLUDED.latency_ms,"
            " server_version = EXCLUDED.server_version,"
            " ledger_version = EXCLUDED.ledger_version, sets = EXCLUDED.sets,"
            " behind_sets = EXCLUDED.behind_sets,"
            # An unreachable target keeps the fingerprint and drift it last showed.
            " fingerprint = coalesce(EXCLUDED.fingerprint, target_health.fingerprint),"
            " objects = coalesce(EXCLUDED.objects, target_health.objects),"
            " drift = CASE WHEN EXCLUDED.reachable THEN EXCLUDED.drift"
            " ELSE target_health.drift END,"
            " drifted = CASE WHEN EXCLUDED.reachable THEN EXCLUDED.drifted"
            " ELSE target_health.drifted END,"
            " checked_at = EXCLUDED.checked_at, run_id = EXCLUDED.run_id",
            health.database_id,
            health.reachable,
            health.error,
            health.latency_ms,
            health.server_version,
            health.ledger_version,
            json.dumps([s.model_dump(mode="json") for s in health.sets]),
            health.behind_sets,
            health.fingerprint,
            None if objects is None else json.dumps(objects),
            health.drift.model_dump_json(),
            health.drift.drifted,
            health.checked_at,
            health.run_id,
        )

    async def mark_reported(self, states: Sequence[ReportedState]) -> None:
        """Record that the events for these states went out."""
        await self.pool.executemany(
            "UPDATE target_health SET reported_reachable = $2, reported_drifted = $3, "
            "events_sent = $4 WHERE database_id = $1",
            [(s.database_id, s.reachable, s.drifted, s.events_sent) for s in states],
        )

    async def reference(self, set_name: str, version: str, chain: str) -> Reference | None:
        """The cached reference of ``set_name`` at ``version`` (None: not built yet)."""
        row = await self.pool.fetchrow(
            "SELECT fingerprint, objects, error FROM health_references "
            "WHERE set_name = $1 AND version = $2 AND chain = $3",
            set_name,
            version,
            chain,
        )
        if row is None:
            return None
        return Reference(row["fingerprint"], _json(row["objects"]) or {}, row["error"])

    async def save_reference(
        self, set_name: str, version: str, chain: str, reference: Reference
    ) -> None:
        """Cache a reference (the first one stored wins)."""
        await self.pool.execute(
            "INSERT INTO health_references (set_name, version, chain, fingerprint, objects, error)"
            " VALUES ($1, $2, $3, $4, $5::jsonb, $6) ON CONFLICT DO NOTHING",
            set_name,
            version,
            chain,
            reference.fingerprint,
            json.dumps(reference.objects),
            reference.error,
        )

    async def majority(
        self, set_name: str, version: str, database_id: uuid.UUID
    ) -> Reference | None:
        """The fingerprint most peers (reachable targets of ``set_name`` at ``version``, this
        one excluded) share, when more than half of at least two share it."""
        peers = json.dumps([{"set_name": set_name, "version": version}])
        rows = await self.pool.fetch(
            "SELECT fingerprint, count(*) AS n FROM target_health WHERE sets @> $1::jsonb "
            "AND fingerprint IS NOT NULL AND database_id <> $2 "
            "GROUP BY fingerprint ORDER BY n DESC, fingerprint LIMIT 2",
            peers,
            database_id,
        )
        total = await self.pool.fetchval(
            "SELECT count(*) FROM target_health WHERE sets @> $1::jsonb "
            "AND fingerprint IS NOT NULL AND database_id <> $2",
            peers,
            database_id,
        )
        if not rows or total < 2 or rows[0]["n"] * 2 <= total:
            return None
        objects = await self.pool.fetchval(
            "SELECT objects FROM target_health WHERE fingerprint = $1 AND objects IS NOT NULL "
            "LIMIT 1",
            rows[0]["fingerprint"],
        )
        return Reference(rows[0]["fingerprint"], _json(objects) or {}, None)

    async def drift_summary(self, set_name: str) -> DriftSummary:
        """The checked targets carrying ``set_name``, grouped by their ledger version, with the
        drifted ones and what differs."""
        rows = await self.pool.fetch(
            "SELECT d.id, d.name, s.value->>'version' AS version, h.drifted, h.drift "
            "FROM target_health h JOIN databases d ON d.id = h.database_id "
            "CROSS JOIN LATERAL jsonb_array_elements(h.sets) s "
            "WHERE s.value->>'set_name' = $1 ORDER BY d.name",
            set_name,
        )
        groups: dict[str | None, DriftVersion] = {}
        for row in rows:
            group = groups.setdefault(
                row["version"], DriftVersion(version=row["version"], targets=0, drifted=[])
            )
            group.targets += 1
            if row["drifted"]:
                drift = DriftReport.model_validate(_json(row["drift"]))
                group.drifted.append(
                    DriftedTarget(
                        database_id=row["id"],
                        name=row["name"],
                        differences=drift.differences,
                        total_differences=drift.total_differences,
                        source=drift.source,
                    )
                )
        ordered = sorted(
            groups.values(),
            key=lambda g: (g.version is not None, version_key(g.version) if g.version else ()),
        )
        return DriftSummary(set_name=set_name, versions=ordered)
