"""What a tenantflow worker runs: the workflow classes and the activity objects bound to pools."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from activities.fleet import FleetActivities
from activities.migrations import MigrationActivities
from activities.system import SystemActivities
from activities.targets import TargetActivities
from common.catalog.databases import DatabaseRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.crypto import CredentialCipher
from workflows.fleet import MigrateFleetWorkflow
from workflows.migrations import (
    MigrateTargetWorkflow,
    ReadLedgerWorkflow,
    RollbackTargetWorkflow,
)
from workflows.system import SystemCheckWorkflow
from workflows.targets import TestConnectionWorkflow

WORKFLOWS: Sequence[type] = (
    SystemCheckWorkflow,
    TestConnectionWorkflow,
    MigrateTargetWorkflow,
    RollbackTargetWorkflow,
    MigrateFleetWorkflow,
    ReadLedgerWorkflow,
)


def build_activities(catalog: asyncpg.Pool, cipher: CredentialCipher) -> list[Callable[..., Any]]:
    """The bound activity methods, each holding the dependencies it needs."""
    databases = DatabaseRepository(catalog, cipher)
    system = SystemActivities(catalog)
    targets = TargetActivities(databases)
    migrations = MigrationActivities(databases, MigrationSetRepository(catalog))
    fleet = FleetActivities(databases)
    return [
        system.check_catalog,
        targets.test_connection,
        migrations.run_target,
        migrations.run_target_batch,
        migrations.read_ledger,
        fleet.resolve_targets,
    ]
