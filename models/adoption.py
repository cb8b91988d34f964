"""Taking over targets migrated by another tool (adopt) or by none (baseline)."""

from __future__ import annotations

from enum import StrEnum


class AdoptSource(StrEnum):
    """The tools whose history tables tenantflow reads when it adopts a target."""

    FLYWAY = "flyway"  # flyway_schema_history: one row per migration, with a CRC32 checksum
    GOLANG_MIGRATE = "golang-migrate"  # schema_migrations(version bigint, dirty boolean)
    DBMATE = "dbmate"  # schema_migrations(version varchar): one row per applied version


# What ``adopted_from`` says on ledger rows written by a baseline (no tool ran them).
BASELINE_MARK = "baseline"
