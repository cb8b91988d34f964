"""Fleet health totals for the monitoring summary, from the latest health snapshots alone.

The sweep already connected to every target and recorded each assigned set's ledger version
(``target_health.sets``), so "targets per version per set" is two aggregate queries over the
catalog, never a connection to 100,000 targets."""

from __future__ import annotations

import json

import asyncpg

from models.migrations import version_key
from models.monitoring import FleetHealthTotals, SetHealth

# Snapshots of targets carrying these labels (an empty filter matches every target).
_SCOPED = (
    "SELECT h.* FROM target_health h JOIN databases d ON d.id = h.database_id "
    "WHERE d.labels @> $1::jsonb"
)


async def fleet_health_totals(pool: asyncpg.Pool, labels: dict[str, str]) -> FleetHealthTotals:
    """Checked, unreachable, drifted and behind targets, and per set its targets per version."""
    scope = json.dumps(labels)
    async with pool.acquire() as conn:
        totals = await conn.fetchrow(
            f"WITH h AS ({_SCOPED}) SELECT count(*) AS checked, "  # noqa: S608 - constant
            "count(*) FILTER (WHERE NOT reachable) AS unreachable, "
            "count(*) FILTER (WHERE drifted) AS drifted, "
            "count(*) FILTER (WHERE behind_sets <> '{}') AS behind FROM h",
            scope,
        )
        assert totals is not None  # an aggregate always returns a row
        rows = await conn.fetch(
            f"WITH h AS ({_SCOPED}) SELECT s.value->>'set_name' AS set_name, "  # noqa: S608
            "s.value->>'version' AS version, count(*) AS targets, "
            "count(*) FILTER (WHERE (s.value->>'behind')::boolean) AS behind, "
            "count(*) FILTER (WHERE h.drifted) AS drifted "
            "FROM h CROSS JOIN LATERAL jsonb_array_elements(h.sets) s GROUP BY 1, 2",
            scope,
        )
    sets: dict[str, SetHealth] = {}
    for row in rows:
        entry = sets.setdefault(
            row["set_name"],
            SetHealth(set_name=row["set_name"], targets=0, versions={}, behind=0, drifted=0),
        )
        entry.targets += row["targets"]
        entry.versions[row["version"] or "none"] = row["targets"]
        entry.behind += row["behind"]
        entry.drifted += row["drifted"]
    for entry in sets.values():
        entry.versions = dict(
            sorted(
                entry.versions.items(),
                key=lambda item: (
                    item[0] != "none",
                    version_key(item[0]) if item[0] != "none" else (),
                ),
            )
        )
    return FleetHealthTotals(
        checked=totals["checked"],
        unreachable=totals["unreachable"],
        drifted=totals["drifted"],
        behind=totals["behind"],
        sets=sorted(sets.values(), key=lambda s: s.set_name),
    )
