"""Migration sets, per-target runs and their results."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

from models.adoption import AdoptSource
from models.lint import LockRisk

# Versions are dot-separated non-negative integers: "3", "20240101120000", "1.2" (Flyway).
_VERSION = re.compile(r"^\d{1,20}(\.\d{1,20}){0,5}$")
_SET_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")
# A set's ledger table in its targets: lowercase (the same name quoted or not), at most 63 bytes.
_LEDGER_TABLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# The ledger table of every set registered without one (and of every set before sets named it).
DEFAULT_LEDGER_TABLE = "tenantflow_schema_history"


def normalise_version(value: str) -> str:
    """Canonical text of a version: dot-separated integers without leading zeros."""
    text = value.strip().replace("_", ".")
    if not _VERSION.fullmatch(text):
        raise ValueError(f"version {value[:40]!r} must be integers separated by dots")
    return ".".join(str(int(part)) for part in text.split("."))


# A repeatable migration (Flyway's ``R__<description>.sql``) has no number: its identity in a
# set and in a target's ledger is this prefix and its description.
REPEATABLE_PREFIX = "R:"


def is_repeatable(version: str) -> bool:
    """Whether ``version`` names a repeatable migration (``R:<description>``)."""
    return version.startswith(REPEATABLE_PREFIX)


def repeatable_version(description: str) -> str:
    """The identity of the repeatable migration described by ``description``."""
    return REPEATABLE_PREFIX + description


def version_key(version: str) -> tuple[int, ...]:
    """Sort key: versions order numerically, part by part (2 < 10, 1.2 < 1.10).

    A repeatable's key is ``()``, below every version: a ``max`` over a set's versions or a
    ledger's rows is the latest numbered version, and a ``<= version`` filter keeps the
    repeatables (they apply at every version). The engine orders them itself (last, by
    description)."""
    if is_repeatable(version):
        return ()
    return tuple(int(part) for part in version.split("."))


def _migration_version(value: str) -> str:
    if is_repeatable(value):
        if not value[len(REPEATABLE_PREFIX) :].strip():
            raise ValueError("a repeatable migration needs a description")
        return value
    return normalise_version(value)


def _check_set_name(value: str) -> str:
    if not _SET_NAME.fullmatch(value):
        raise ValueError("must be lowercase letters, digits, '.', '_' or '-' (max 64)")
    return value


def check_ledger_table(value: str) -> str:
    """``value`` if it can name a set's ledger table, else ``ValueError``."""
    if not _LEDGER_TABLE.fullmatch(value):
        raise ValueError(
            "must be 1-63 lowercase letters, digits or '_', starting with a letter or '_'"
        )
    if value.startswith("pg_"):
        raise ValueError("names starting with 'pg_' are reserved by PostgreSQL")
    return value


Version = Annotated[str, AfterValidator(normalise_version)]
# A version of a set: a number, or ``R:<description>`` for a repeatable migration.
MigrationVersion = Annotated[str, AfterValidator(_migration_version)]
SetName = Annotated[str, AfterValidator(_check_set_name)]
LedgerTable = Annotated[str, AfterValidator(check_ledger_table)]


class MigrationFormat(StrEnum):
    """The on-disk layouts tenantflow reads."""

    FLYWAY = "flyway"  # V3__add_orders.sql + U3__add_orders.sql
    GOLANG_MIGRATE = "golang-migrate"  # 000003_add_orders.up.sql + .down.sql
    DBMATE = "dbmate"  # 20240101120000_add_orders.sql with -- migrate:up / -- migrate:down


class Migration(BaseModel):
    """One immutable version of a set, or one of its repeatable migrations (``repeatable``:
    version ``R:<description>``, applied after the versions and again whenever it changes)."""

    version: MigrationVersion
    description: str = Field(max_length=500)
    up_sql: str = Field(description="Run byte for byte as registered; empty: a no-op version")
    down_sql: str | None = None
    checksum: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="sha256 of the version: up, down and flag"
    )
    no_transaction: bool = Field(
        default=False, description="Marked -- tenantflow:no-transaction: runs outside a transaction"
    )
    down_no_transaction: bool | None = Field(
        default=None,
        description="Whether the down script runs outside a transaction; null: as the up "
        "(dbmate's '-- migrate:down transaction:false', a U file's .sql.conf say otherwise)",
    )
    source: str | None = Field(default=None, description="The file it was read from.")
    withdrawn: bool = Field(
        default=False, description="Withdrawn versions are not applied to targets lacking them."
    )
    repeatable: bool = Field(
        default=False,
        description="A repeatable migration (Flyway R__): no down, re-applied when it changes",
    )

    @property
    def down_outside_transaction(self) -> bool:
        """Whether the down script runs statement by statement, outside a transaction."""
        if self.down_no_transaction is None:
            return self.no_transaction
        return self.down_no_transaction


class MigrationSetUpload(BaseModel):
    """``POST /api/v1/migration-sets`` as JSON: file name -> content, in any supported format."""

    name: SetName
    files: dict[str, str] = Field(min_length=1, max_length=10_000)
    format: MigrationFormat | None = Field(default=None, description="Detected when omitted.")
    ledger_table: LedgerTable | None = Field(
        default=None,
        description="The table the set's ledger is kept in, in each target; set when the set is "
        f"first registered ({DEFAULT_LEDGER_TABLE} when omitted) and never changed. Sets that "
        "share a target need tables of their own.",
    )


class MigrationSetRegistered(BaseModel):
    """What registering did."""

    name: str
    ledger_table: str = DEFAULT_LEDGER_TABLE
    added: list[str]
    unchanged: list[str]
    latest_version: str | None
    updated: list[str] = Field(
        default_factory=list,
        description="Repeatable migrations registered again with new content (R:<description>).",
    )


class MigrationSummary(BaseModel):
    """A version without its SQL, for listings."""

    version: str
    description: str
    checksum: str
    has_down: bool
    no_transaction: bool
    registered_at: datetime
    withdrawn: bool = False
    repeatable: bool = False


class MigrationSetInfo(BaseModel):
    """A registered set."""

    name: str
    ledger_table: str = Field(
        default=DEFAULT_LEDGER_TABLE, description="The set's ledger table in each target."
    )
    created_at: datetime
    latest_version: str | None
    migrations: list[MigrationSummary]


class MigrationSetContent(BaseModel):
    """What the engine runs of a set: every version with its SQL, and its ledger table."""

    name: str
    ledger_table: str = DEFAULT_LEDGER_TABLE
    migrations: list[Migration]


class MigrationSetList(BaseModel):
    """Registered sets (without their versions)."""

    items: list[MigrationSetInfo]


class TargetRunKind(StrEnum):
    """What a per-target run does."""

    APPLY = "apply"
    ROLLBACK = "rollback"
    ADOPT = "adopt"  # record what another tool applied (models.adoption), running nothing
    BASELINE = "baseline"  # mark a target never migrated as at target_version, running nothing


class TargetRunInput(BaseModel):
    """Input of the per-target workflows and activities: ids and options, never credentials."""

    run_id: str = Field(description="Business id of the run; written to the ledger.")
    database_id: uuid.UUID
    set_name: str
    kind: TargetRunKind = TargetRunKind.APPLY
    target_version: str | None = Field(
        default=None,
        description="apply: up to this version (latest when null); rollback: to it; "
        "baseline: the version the target is marked at",
    )
    adopt_from: AdoptSource | None = Field(
        default=None, description="adopt: the tool whose history table is read"
    )
    dry_run: bool = False
    lock_timeout_ms: int = Field(default=5_000, ge=0, le=3_600_000)
    statement_timeout_ms: int = Field(default=0, ge=0, le=86_400_000)
    heartbeat_timeout_seconds: float = Field(
        default=30.0, ge=1, le=600, description="How soon a dead worker's run is retried."
    )
    rollback_of: str | None = Field(
        default=None,
        description="rollback: only a target whose ledger holds rows of this run; the others "
        "are left as they are (up_to_date)",
    )
    settle_only: bool = Field(
        default=False,
        description="apply: only read the ledger; an up-to-date target is settled, any other "
        "deferred (its result says so) to a batch that runs it",
    )


class AppliedVersion(BaseModel):
    """One version applied (or rolled back) by a run."""

    version: str
    description: str
    execution_ms: float
    repeatable: bool = Field(
        default=False, description="A repeatable migration, applied (again) after the versions."
    )


class PlannedVersion(BaseModel):
    """One version a dry run would apply or roll back, with its SQL."""

    version: str
    description: str
    sql: str
    no_transaction: bool = False
    repeatable: bool = False
    warnings: list[LockRisk] = Field(
        default_factory=list,
        description="Lock-risk findings of its SQL (docs/lock-risks.md); dry runs only.",
    )


class MigrationFailure(BaseModel):
    """Why a target stopped: PostgreSQL's error, or a refusal before any change."""

    version: str | None
    reason: str = Field(
        description="checksum_mismatch, sql_error, missing_down, unknown_version, lock_timeout, "
        "unreachable, not_found, network_refused (the network allow-list); adopt and baseline: "
        "no_history, dirty, failed_version, already_managed"
    )
    message: str
    sqlstate: str | None = None
    position: str | None = None


class TargetRunResult(BaseModel):
    """What happened on one target."""

    run_id: str
    database_id: uuid.UUID
    kind: TargetRunKind
    dry_run: bool
    from_version: str | None
    to_version: str | None
    applied: list[AppliedVersion] = Field(default_factory=list)
    planned: list[PlannedVersion] = Field(default_factory=list)
    failure: MigrationFailure | None = None
    deferred: bool = Field(
        default=False,
        description="The target was not run: settle_only found work left, or its batch "
        "stopped at another target's failure (stop_at_failure).",
    )

    @property
    def ok(self) -> bool:
        """Whether the run ended without a failure."""
        return self.failure is None


class LedgerEntry(BaseModel):
    """One row of a target's ledger table (``tenantflow_schema_history`` unless its set names
    another)."""

    version: str
    description: str
    checksum: str
    applied_at: datetime
    execution_ms: float
    run_id: str
    success: bool
    adopted_from: str | None = Field(
        default=None,
        description="The tool an adopted row was taken over from (flyway, golang-migrate, "
        "dbmate) or baseline; null for versions tenantflow ran.",
    )


class TargetRunRequest(BaseModel):
    """``POST /api/v1/databases/{id}/migrate`` and ``.../rollback``."""

    set: SetName = Field(description="The registered migration set.")
    to_version: str | None = Field(
        default=None, max_length=120, description="apply: latest when omitted; rollback: required"
    )
    dry_run: bool = Field(
        default=False, description="Return the plan with its SQL; change nothing."
    )
    lock_timeout_ms: int = Field(default=5_000, ge=0, le=3_600_000)
    statement_timeout_ms: int = Field(default=0, ge=0, le=86_400_000)
    wait: bool = Field(default=True, description="Answer with the result (200) or at once (202).")


class TargetRunStatus(StrEnum):
    """Where a per-target run is."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class TargetRunState(BaseModel):
    """A per-target run as Temporal knows it."""

    run_id: str
    workflow_id: str
    status: TargetRunStatus
    result: TargetRunResult | None = None
    error: str | None = None


class LedgerRequest(BaseModel):
    """Input of ``ReadLedgerWorkflow``."""

    database_id: uuid.UUID
    set_name: str | None = Field(
        default=None, description=f"Read this set's ledger table ({DEFAULT_LEDGER_TABLE}: none)."
    )


class Ledger(BaseModel):
    """A target's ledger table, oldest first."""

    model_config = {"populate_by_name": True}

    database_id: uuid.UUID
    schema_name: str = Field(alias="schema")
    ledger_table: str = DEFAULT_LEDGER_TABLE
    entries: list[LedgerEntry]
