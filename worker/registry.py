"""What a tenantflow worker runs: the workflow classes and the activity objects bound to pools."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
from temporalio.client import Client

from activities.alerts import AlertActivities
from activities.events import EventActivities
from activities.fleet import FleetActivities
from activities.health import HealthActivities
from activities.migrations import MigrationActivities
from activities.outcomes import OutcomeActivities
from activities.system import SystemActivities
from activities.targets import TargetActivities
from activities.templates import TemplateActivities
from activities.tenants import TenantActivities
from activities.webhooks import WebhookActivities
from common.catalog.assignments import AssignmentRepository
from common.catalog.databases import DatabaseRepository
from common.catalog.health import HealthRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.catalog.servers import ServerRepository
from common.catalog.templates import TemplateRepository
from common.catalog.tenants import TenantRepository
from common.catalog.webhooks import WebhookRepository
from common.crypto import CredentialCipher
from common.settings import AlertSettings, WebhookSettings
from workflows.alerts import WatchAlertsWorkflow
from workflows.events import RegisterDatabaseWorkflow
from workflows.fleet import MigrateFleetWorkflow
from workflows.health import FleetHealthWorkflow
from workflows.migrations import (
    MigrateTargetWorkflow,
    ReadLedgerWorkflow,
    RollbackTargetWorkflow,
)
from workflows.outcomes import ReadRunOutcomesWorkflow
from workflows.system import SystemCheckWorkflow
from workflows.targets import TestConnectionWorkflow
from workflows.templates import BuildTenantTemplateWorkflow
from workflows.tenants import (
    DeprovisionTenantWorkflow,
    ProvisionTenantWorkflow,
    RotateTenantPasswordWorkflow,
)
from workflows.webhooks import DeliverWebhookWorkflow

WORKFLOWS: Sequence[type] = (
    SystemCheckWorkflow,
    TestConnectionWorkflow,
    MigrateTargetWorkflow,
    RollbackTargetWorkflow,
    MigrateFleetWorkflow,
    FleetHealthWorkflow,
    ReadLedgerWorkflow,
    ReadRunOutcomesWorkflow,
    DeliverWebhookWorkflow,
    RegisterDatabaseWorkflow,
    ProvisionTenantWorkflow,
    DeprovisionTenantWorkflow,
    RotateTenantPasswordWorkflow,
    BuildTenantTemplateWorkflow,
    WatchAlertsWorkflow,
)


def build_activities(
    catalog: asyncpg.Pool,
    cipher: CredentialCipher,
    *,
    temporal: Client | None = None,
    webhook_settings: WebhookSettings | None = None,
    task_queue: str = "tenantflow",
    catalog_dsn: str | None = None,
    templates: bool = True,
    alert_settings: AlertSettings | None = None,
) -> list[Callable[..., Any]]:
    """The bound activity methods, each holding the dependencies it needs (``temporal`` is
    for activities that start workflows, such as ``publish_event``; ``catalog_dsn`` lets the
    health activities build references in scratch databases on the catalog's server;
    ``templates``: the provisioning fast path; ``alert_settings``: the alert watcher's)."""
    databases = DatabaseRepository(catalog, cipher)
    system = SystemActivities(catalog)
    targets = TargetActivities(databases)
    migrations = MigrationActivities(databases, MigrationSetRepository(catalog))
    fleet = FleetActivities(databases)
    events = EventActivities(
        databases,
        ServerRepository(catalog, cipher),
        AssignmentRepository(catalog),
        MigrationSetRepository(catalog),
    )
    tenants = TenantActivities(
        TenantRepository(catalog, cipher),
        ServerRepository(catalog, cipher),
        databases,
        AssignmentRepository(catalog),
    )
    template_activities = TemplateActivities(
        TemplateRepository(catalog),
        tenants.tenants,
        tenants.servers,
        MigrationSetRepository(catalog),
        tenants.assignments,
        migrations,
        enabled=templates,
    )
    webhooks = WebhookActivities(
        WebhookRepository(catalog, cipher),
        temporal=temporal,
        settings=webhook_settings,
        task_queue=task_queue,
    )
    health = HealthActivities(
        databases,
        MigrationSetRepository(catalog),
        AssignmentRepository(catalog),
        HealthRepository(catalog),
        catalog_dsn,
    )
    alerts = AlertActivities(temporal, alert_settings or AlertSettings(), task_queue)
    return [
        system.check_catalog,
        targets.test_connection,
        migrations.run_target,
        migrations.run_target_batch,
        migrations.read_ledger,
        OutcomeActivities(databases, MigrationSetRepository(catalog)).read_run_outcomes,
        fleet.resolve_targets,
        health.check_health_batch,
        health.mark_health_reported,
        events.register_database,
        events.assigned_sets,
        webhooks.deliver_webhook,
        webhooks.publish_event,
        tenants.create_role,
        tenants.create_storage,
        tenants.register_target,
        tenants.activate,
        tenants.remove_target,
        tenants.drop_storage,
        tenants.drop_role,
        tenants.finish,
        tenants.rotate_password,
        template_activities.choose,
        template_activities.build,
        template_activities.retire,
        template_activities.discard,
        alerts.evaluate_alerts,
    ]
