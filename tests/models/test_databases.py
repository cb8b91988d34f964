"""Target registration models: label, name and host rules, and what an update may clear."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from models.databases import DatabaseCreate, DatabaseUpdate

BASE: dict[str, object] = {
    "name": "tenant-1",
    "host": "db.internal",
    "database": "app",
    "user": "app",
    "password": "secret",
}


def create(**changes: object) -> DatabaseCreate:
    return DatabaseCreate.model_validate({**BASE, **changes})


def test_a_plain_target_is_accepted_with_its_defaults() -> None:
    target = create(labels={"tier": "gold"})
    assert (target.port, target.schema_name, target.sslmode) == (5432, None, None)
    assert target.labels == {"tier": "gold"}
    assert target.password.get_secret_value() == "secret"


def test_at_most_32_labels() -> None:
    create(labels={f"k{i}": "v" for i in range(32)})
    with pytest.raises(ValidationError, match="at most 32 labels"):
        create(labels={f"k{i}": "v" for i in range(33)})


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"Tier": "gold"}, "label key 'Tier' must be lowercase"),
        ({"tier": "gold plated"}, "label 'tier': value must be letters"),
    ],
)
def test_label_keys_and_values_have_rules(labels: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        create(labels=labels)


@pytest.mark.parametrize("name", ["Tenant-1", "-tenant", "tenant 1"])
def test_names_are_lowercase_words(name: str) -> None:
    with pytest.raises(ValidationError, match="must be lowercase letters, digits"):
        create(name=name)


@pytest.mark.parametrize("host", ["db.internal", "10.0.0.5", "::1", "[fe80::1]", "/var/run/pg"])
def test_hosts_that_are_accepted(host: str) -> None:
    assert create(host=host).host == host


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("db_internal!", "must be a host name, an IP address or a socket directory"),
        ("[::1", "must be a valid IPv6 address"),
        ("::1]", "must be a valid IPv6 address"),
        ("1:2:3:4:5:6:7:8:9", "must be a valid IPv6 address"),
        ("2852039166", "four decimals"),
        ("169.254.43518", "four decimals"),
        ("db.0x10", "four decimals"),
    ],
)
def test_hosts_that_are_refused(host: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        create(host=host)


def test_an_update_may_not_clear_a_required_field() -> None:
    with pytest.raises(ValidationError, match="host, user cannot be null"):
        DatabaseUpdate.model_validate({"host": None, "user": None})
    update = DatabaseUpdate.model_validate({"server": None, "sslmode": None})
    assert update.model_fields_set == {"server", "sslmode"}


def test_an_update_refuses_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        DatabaseUpdate.model_validate({"hostname": "x"})
