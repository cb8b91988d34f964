"""The network allow-list: decisions, registration checks, and connection-time enforcement on
the resolved addresses, through the real activities and a real PostgreSQL."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from temporalio.testing import ActivityEnvironment

from activities.health import HealthActivities
from activities.migrations import MigrationActivities
from activities.targets import TargetActivities
from common import network_policy
from common.catalog.assignments import AssignmentRepository
from common.catalog.databases import DatabaseRepository
from common.catalog.health import HealthRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.crypto import CredentialCipher, KeyRing
from common.network_policy import (
    ALLOWED_SETTING,
    DENIED_SETTING,
    SOCKETS_SETTING,
    HostNotAllowed,
    NetworkPolicy,
    NetworkRefused,
    check_registered_host,
)
from common.settings import NetworkSettings, Settings
from models.databases import ConnectionTestInput, DatabaseCreate
from models.fleet import TargetBatchInput
from models.health import HealthBatchInput
from models.migrations import Migration, TargetRunInput, TargetRunKind
from tests.conftest import TargetDatabase

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = NetworkPolicy(NetworkSettings())
# What "localhost" may resolve to: refusing both makes the name refused whatever the order.
LOOPBACK = ["127.0.0.0/8", "::1/128"]


def policy(**values: object) -> NetworkPolicy:
    return NetworkPolicy(NetworkSettings.model_validate(values))


def refused(chosen: NetworkPolicy, host: str) -> str | None:
    """The setting that refuses ``host`` as registered, or None."""
    refusal = chosen.registration_refusal(host)
    return None if refusal is None else refusal.setting


# --- decisions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",
        "169.254.170.2",
        "fe80::1",
        "[fe80::a9fe:a9fe]",
        "fd00:ec2::254",
        "fd20:ce::254",
        "100.100.100.200",
        "168.63.129.16",
        "0.0.0.0",  # noqa: S104 - an address under test, not a bind
        "::",
        "::ffff:a9fe:a9fe",  # 169.254.169.254, IPv4-mapped
        "64:ff9b::a9fe:a9fe",  # 169.254.169.254 through NAT64
        "2002:a9fe:a9fe::1",  # 169.254.169.254 through 6to4
    ],
)
def test_link_local_and_metadata_addresses_are_refused_by_default(host: str) -> None:
    assert refused(DEFAULT, host) == DENIED_SETTING


@pytest.mark.parametrize(
    "host",
    [
        "10.1.2.3",
        "192.168.0.10",
        "127.0.0.1",
        "::1",
        "2001:db8::5",
        "::ffff:10.0.0.1",
        "db.internal",
    ],
)
def test_other_addresses_and_names_are_allowed_by_default(host: str) -> None:
    assert refused(DEFAULT, host) is None


def test_an_address_outside_every_allowed_network_is_refused() -> None:
    only_ten = policy(allowed_networks=["10.0.0.0/8"])
    assert refused(only_ten, "10.9.8.7") is None
    assert refused(only_ten, "192.168.1.1") == ALLOWED_SETTING
    assert refused(only_ten, "::1") == ALLOWED_SETTING  # no IPv6 network is allowed
    assert refused(only_ten, "169.254.169.254") == DENIED_SETTING  # the more specific rule


def test_the_most_specific_network_decides() -> None:
    carved = policy(allowed_networks=["10.0.0.0/8"], denied_networks=["10.9.0.0/16"])
    assert refused(carved, "10.9.1.1") == DENIED_SETTING
    assert refused(carved, "10.8.1.1") is None
    # A smaller allowed network inside a denied one lifts only that part.
    lifted = policy(allowed_networks=["0.0.0.0/0", "169.254.10.0/24"])
    assert refused(lifted, "169.254.10.5") is None
    assert refused(lifted, "169.254.169.254") == DENIED_SETTING


def test_the_same_network_in_both_lists_is_allowed() -> None:
    explicit = policy(allowed_networks=["0.0.0.0/0", "::/0", "169.254.0.0/16", "fe80::/10"])
    assert refused(explicit, "169.254.169.254") is None
    assert refused(explicit, "fe80::1") is None
    assert refused(explicit, "fd00:ec2::254") == DENIED_SETTING  # still refused on its own


def test_an_empty_deny_list_refuses_nothing_by_itself() -> None:
    assert refused(policy(denied_networks=[]), "169.254.169.254") is None


def test_socket_directories_follow_their_setting() -> None:
    assert refused(DEFAULT, "/var/run/postgresql") is None
    assert refused(policy(allow_unix_sockets=False), "/var/run/postgresql") == SOCKETS_SETTING


def test_names_are_left_to_connection_time() -> None:
    strict = policy(allowed_networks=["10.0.0.0/8"])
    assert refused(strict, "metadata.google.internal") is None


def test_registration_error_names_the_host_and_the_setting_in_a_422() -> None:
    with pytest.raises(HostNotAllowed) as info:
        check_registered_host("169.254.169.254", NetworkSettings())
    error = info.value
    assert error.status_code == 422
    assert error.error_type == "network_refused"
    assert "169.254.169.254" in error.message
    assert DENIED_SETTING in error.message
    assert error.details == {
        "host": "169.254.169.254",
        "address": "169.254.169.254",
        "network": "169.254.0.0/16",
        "setting": DENIED_SETTING,
    }
    check_registered_host("10.0.0.1", NetworkSettings())  # allowed: no error


def test_connection_refusal_is_a_non_retryable_temporal_error() -> None:
    refusal = DEFAULT.registration_refusal("fe80::1")
    assert refusal is not None
    error = NetworkRefused(refusal)
    assert error.non_retryable is True
    assert error.type == "NetworkRefused"
    assert "fe80::1" in error.message
    assert "fe80::/10" in error.message
    assert DENIED_SETTING in error.message


# --- resolution ----------------------------------------------------------------------------------


async def test_a_name_resolving_into_a_refused_network_is_refused() -> None:
    no_loopback = policy(denied_networks=LOOPBACK)
    with pytest.raises(NetworkRefused) as info:
        await no_loopback.resolve("localhost", 5432)
    message = info.value.message
    assert "'localhost' resolves to" in message
    assert DENIED_SETTING in message
    address = ipaddress.ip_address(info.value.refusal.address or "")
    assert address.is_loopback


async def test_connections_go_to_the_checked_addresses() -> None:
    params = {"host": "localhost", "port": 5432, "user": "u", "password": "p", "ssl": None}
    pinned = await DEFAULT.pinned(params)
    hosts = pinned["host"] if isinstance(pinned["host"], list) else [pinned["host"]]
    assert hosts and all(ipaddress.ip_address(h).is_loopback for h in hosts)
    assert {k: v for k, v in pinned.items() if k != "host"} == {
        k: v for k, v in params.items() if k != "host"
    }
    # verify-full keeps the name: the certificate is checked against it.
    kept = await DEFAULT.pinned({**params, "ssl": "verify-full"})
    assert kept["host"] == "localhost"
    # Literal addresses and socket directories are used as they are.
    assert (await DEFAULT.pinned({**params, "host": "127.0.0.1"}))["host"] == "127.0.0.1"
    assert (await DEFAULT.pinned({**params, "host": "/tmp"}))["host"] == "/tmp"  # noqa: S108


async def test_a_dsn_of_the_operators_own_is_left_as_it_is() -> None:
    # The health sweep replays references in scratch databases on the catalog's server.
    params = {"dsn": "postgresql://tf@169.254.1.1/tf", "database": "scratch"}
    assert await DEFAULT.pinned(params) == params


async def test_a_refused_literal_never_reaches_the_resolver() -> None:
    with pytest.raises(NetworkRefused, match=r"169\.254\.169\.254"):
        await DEFAULT.pinned({"host": "169.254.169.254", "port": 5432})


# --- one door for every target connection --------------------------------------------------------


def test_every_activity_connects_to_targets_through_the_policy() -> None:
    """asyncpg.connect appears in activities only for the catalog's own server (the health
    sweep's scratch databases); every target and server connection uses network_policy."""
    direct = []
    for path in sorted((ROOT / "activities").glob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"asyncpg\.connect\(|create_pool\(", line) and "_catalog_dsn" not in line:
                direct.append(f"{path.name}:{number}: {line.strip()}")
    assert direct == []


# --- at connection time, through the activities (real PostgreSQL) -------------------------------


@pytest.fixture
def process_policy() -> Iterator[None]:
    """Whatever a test configures as the process's policy is undone afterwards."""
    yield
    network_policy.configure(None)


def _repository(pool: asyncpg.Pool, settings: Settings) -> DatabaseRepository:
    return DatabaseRepository(pool, CredentialCipher(KeyRing.from_settings(settings.crypto)))


async def _register(
    repository: DatabaseRepository, target: TargetDatabase, host: str, schema: str | None = None
) -> uuid.UUID:
    body = target.create_body(name=f"np-{uuid.uuid4().hex[:8]}", host=host, schema=schema)
    return (await repository.create(DatabaseCreate.model_validate(body))).id


async def test_connection_test_reports_a_refused_target_without_connecting(
    catalog_pool: asyncpg.Pool,
    settings: Settings,
    target_database: TargetDatabase,
    process_policy: None,
) -> None:
    repository = _repository(catalog_pool, settings)
    database_id = await _register(repository, target_database, "localhost")
    activities = TargetActivities(repository)
    run = ActivityEnvironment().run

    allowed = await run(activities.test_connection, ConnectionTestInput(database_id=database_id))
    assert allowed.ok, allowed.error  # "localhost" resolves to an allowed loopback address

    network_policy.configure(NetworkSettings.model_validate({"denied_networks": LOOPBACK}))
    result = await run(activities.test_connection, ConnectionTestInput(database_id=database_id))
    assert result.ok is False
    assert result.error is not None
    assert "'localhost' resolves to" in result.error
    assert DENIED_SETTING in result.error
    assert target_database.password not in result.error
    await repository.delete(database_id)


async def test_fleet_batch_records_network_refused_on_the_target(
    catalog_pool: asyncpg.Pool,
    settings: Settings,
    target_database: TargetDatabase,
    process_policy: None,
) -> None:
    repository = _repository(catalog_pool, settings)
    sets = MigrationSetRepository(catalog_pool)
    set_name = f"np-{uuid.uuid4().hex[:8]}"
    up = "CREATE TABLE np_probe (id int);"
    await sets.register(
        set_name,
        [
            Migration.model_validate(
                {
                    "version": "1",
                    "description": "probe",
                    "up_sql": up,
                    "checksum": hashlib.sha256(up.encode()).hexdigest(),
                }
            )
        ],
    )
    by_name = await _register(repository, target_database, "localhost")
    by_address = await _register(repository, target_database, "127.0.0.1")
    # Schemas sharing a database and credentials go through one grouped connection.
    schemas = [
        await _register(repository, target_database, "localhost", schema=f"np_{i}")
        for i in range(2)
    ]
    network_policy.configure(NetworkSettings.model_validate({"denied_networks": LOOPBACK}))
    activities = MigrationActivities(repository, sets)
    batch = TargetBatchInput(
        run_id=f"np-{uuid.uuid4().hex[:8]}",
        set_name=set_name,
        kind=TargetRunKind.APPLY,
        target_version=None,
        database_ids=[by_name, by_address, *schemas],
        dry_run=False,
        lock_timeout_ms=5_000,
        statement_timeout_ms=60_000,
    )
    results = {
        r.database_id: r
        for r in await ActivityEnvironment().run(activities.run_target_batch, batch)
    }
    for database_id in (by_name, by_address, *schemas):
        failure = results[database_id].failure
        assert failure is not None
        assert failure.reason == "network_refused"
        assert DENIED_SETTING in failure.message
        assert target_database.password not in failure.message
    refused_by_name = results[by_name].failure
    assert refused_by_name is not None
    assert "'localhost' resolves to" in refused_by_name.message

    # One target alone (MigrateTargetWorkflow's activity): a non-retryable error.
    single = TargetRunInput(run_id=batch.run_id, database_id=by_address, set_name=set_name)
    with pytest.raises(NetworkRefused) as info:
        await ActivityEnvironment().run(activities.run_target, single)
    assert info.value.non_retryable

    # Nothing reached the database.
    conn = await target_database.connect()
    try:
        assert await conn.fetchval("SELECT to_regclass('np_probe')") is None
    finally:
        await conn.close()
    for database_id in (by_name, by_address, *schemas):
        await repository.delete(database_id)


async def test_health_sweep_marks_a_refused_target_unreachable_with_the_reason(
    catalog_pool: asyncpg.Pool,
    settings: Settings,
    target_database: TargetDatabase,
    process_policy: None,
) -> None:
    repository = _repository(catalog_pool, settings)
    database_id = await _register(repository, target_database, "localhost")
    health = HealthActivities(
        repository,
        MigrationSetRepository(catalog_pool),
        AssignmentRepository(catalog_pool),
        HealthRepository(catalog_pool),
        settings.catalog.dsn.get_secret_value(),
    )
    network_policy.configure(NetworkSettings.model_validate({"denied_networks": LOOPBACK}))
    batch = HealthBatchInput(run_id=f"np-{uuid.uuid4().hex[:8]}", database_ids=[database_id])
    await ActivityEnvironment().run(health.check_health_batch, batch)
    stored = await HealthRepository(catalog_pool).latest(database_id)
    assert stored.reachable is False
    assert stored.error is not None
    assert stored.error.startswith("network_refused: target host 'localhost' resolves to")
    assert target_database.password not in stored.error
    await repository.delete(database_id)
