"""Each format's own features and edge cases, as its documentation states them: Flyway's
repeatables and script configuration files, dbmate's per-section transaction option and file
names, golang-migrate's up-only sets and empty titles. Every refusal names the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.migrations.loader import (
    NO_TRANSACTION_MARKER,
    MigrationSetError,
    checksum,
    load_directory,
    parse_files,
    to_format,
)
from models.migrations import Migration, MigrationFormat


def refused(files: dict[str, str], fmt: MigrationFormat | None = None) -> MigrationSetError:
    with pytest.raises(MigrationSetError) as info:
        parse_files(files, fmt)
    return info.value


def comparable(migrations: list[Migration]) -> list[tuple[object, ...]]:
    return [
        (
            m.version,
            m.checksum,
            m.up_sql,
            m.down_sql,
            m.no_transaction,
            m.down_no_transaction,
            m.repeatable,
            m.description,
        )
        for m in migrations
    ]


# --- Flyway: placeholders and baseline migrations ----------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE a (id int);\nCREATE TABLE ${schema}.b (id int);",
        "CREATE TABLE a (id int);\nGRANT SELECT ON a TO ${flyway:user};",
    ],
)
def test_a_flyway_placeholder_is_refused_with_its_line(sql: str) -> None:
    error = refused({"V1__a.sql": sql})
    assert "V1__a.sql:2" in error.message
    assert "placeholder ${" in error.message
    assert error.details["line"] == 2


def test_dollar_quotes_and_dollar_signs_are_not_placeholders() -> None:
    sql = "CREATE FUNCTION f() RETURNS text AS $$ SELECT '$1 {x}' $$ LANGUAGE sql;"
    (only,) = parse_files({"V1__f.sql": sql})
    assert only.up_sql == sql


def test_a_flyway_baseline_migration_names_the_file_and_the_baseline_run() -> None:
    error = refused({"V1__a.sql": "SELECT 1;", "B2__base.sql": "SELECT 1;"})
    assert "B2__base.sql" in error.message
    assert '"kind": "baseline"' in error.message


# --- Flyway: repeatable migrations ---------------------------------------------------------------


def test_repeatables_come_after_the_versions_in_description_order() -> None:
    migrations = parse_files(
        {
            "R__z_last.sql": "SELECT 'z';",
            "V2__b.sql": "SELECT 2;",
            "R__Active_Users.sql": "CREATE OR REPLACE VIEW v AS SELECT 1;",
            "V1__a.sql": "SELECT 1;",
            "R__a_first.sql": "SELECT 'a';",
        }
    )
    assert [m.version for m in migrations] == [
        "1",
        "2",
        "R:Active Users",  # ordinal order of descriptions, as Flyway's: capitals first
        "R:a first",
        "R:z last",
    ]
    view = migrations[2]
    assert (view.repeatable, view.description, view.source) == (
        True,
        "Active Users",
        "R__Active_Users.sql",
    )
    assert view.down_sql is None
    assert view.checksum == checksum("CREATE OR REPLACE VIEW v AS SELECT 1;")


def test_a_set_of_repeatables_only_is_flyway() -> None:
    (m,) = parse_files({"R__view.sql": "SELECT 1;"})
    assert m.version == "R:view"


def test_a_repeatable_with_its_script_configuration() -> None:
    (m,) = parse_files(
        {
            "R__index.sql": "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (x);",
            "R__index.sql.conf": "executeInTransaction=false",
        }
    )
    assert m.no_transaction is True


def test_an_undo_for_a_repeatable_does_not_exist() -> None:
    error = refused({"V1__a.sql": "SELECT 1;", "UR__a.sql": "SELECT 1;"})
    assert "UR__a.sql: not flyway file names" in error.message


def test_repeatables_cannot_be_written_as_golang_migrate_or_dbmate() -> None:
    migrations = parse_files({"V1__a.sql": "SELECT 1;", "R__view.sql": "SELECT 1;"})
    files = to_format(migrations, MigrationFormat.FLYWAY)
    assert files == {"V1__a.sql": "SELECT 1;", "R__view.sql": "SELECT 1;"}
    for fmt in (MigrationFormat.GOLANG_MIGRATE, MigrationFormat.DBMATE):
        with pytest.raises(MigrationSetError, match=r"R__view\.sql: .* no repeatable"):
            to_format(migrations, fmt)


# --- Flyway: script configuration files (.sql.conf) --------------------------------------------


def test_execute_in_transaction_false_runs_the_version_outside_a_transaction() -> None:
    migrations = parse_files(
        {
            "V1__t.sql": "CREATE TABLE t (x int);",
            "V2__index.sql": "CREATE INDEX CONCURRENTLY i ON t (x);",
            "V2__index.sql.conf": (
                "# built concurrently\n! also a comment\n\nexecuteInTransaction = false\n"
            ),
            "U2__index.sql": "DROP INDEX i;",
        }
    )
    index = migrations[1]
    assert index.no_transaction is True
    assert index.up_sql == "CREATE INDEX CONCURRENTLY i ON t (x);"  # the SQL is unchanged
    # Flyway runs the undo script in a transaction unless its own .sql.conf says otherwise.
    assert index.down_no_transaction is False
    assert index.down_outside_transaction is False


def test_the_undo_scripts_own_configuration() -> None:
    (m,) = parse_files(
        {
            "V1__index.sql": "CREATE INDEX CONCURRENTLY i ON t (x);",
            "V1__index.sql.conf": "executeInTransaction=false",
            "U1__index.sql": "DROP INDEX CONCURRENTLY i;",
            "U1__index.sql.conf": "executeInTransaction: false",  # ':' as properties allow
        }
    )
    assert (m.no_transaction, m.down_outside_transaction) == (True, True)
    assert m.down_no_transaction is None  # same as the up's: stored as "as the up"


def test_execute_in_transaction_true_and_utf8_encoding_are_the_defaults() -> None:
    (m,) = parse_files(
        {"V1__a.sql": "SELECT 1;", "V1__a.sql.conf": "executeInTransaction=TRUE\nencoding=UTF-8"}
    )
    assert m.no_transaction is False
    assert m.checksum == checksum("SELECT 1;")


def test_script_configuration_round_trips_without_changing_the_sql() -> None:
    files = {
        "V1__index.sql": "CREATE INDEX CONCURRENTLY i ON t (x);",
        "V1__index.sql.conf": "executeInTransaction=false\n",
        "U1__index.sql": "DROP INDEX i;",
        "R__view.sql": "SELECT 1;",
        "R__view.sql.conf": "executeInTransaction=false\n",
    }
    migrations = parse_files(files)
    assert to_format(migrations, MigrationFormat.FLYWAY) == files
    assert to_format(migrations[:1], MigrationFormat.DBMATE) == {
        "000001_index.sql": (
            "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY i ON t (x);\n"
            "-- migrate:down\nDROP INDEX i;"
        )
    }


@pytest.mark.parametrize(
    ("files", "culprit", "words"),
    [
        pytest.param({"V1__a.sql": "SELECT 1;", "V2__b.sql.conf": "executeInTransaction=false"},
                     "V2__b.sql.conf", "without its script", id="orphan-conf"),
        pytest.param({"V1__a.sql": "SELECT 1;", "V1__a.sql.conf": "executeInTransaction=maybe"},
                     "V1__a.sql.conf", "must be true or false", id="bad-value"),
        pytest.param({"V1__a.sql": "SELECT 1;", "V1__a.sql.conf": "\nshouldExecute=true"},
                     "V1__a.sql.conf, line 2", "'shouldExecute' is not a script setting",
                     id="unsupported-setting"),
        pytest.param({"V1__a.sql": "SELECT 1;", "V1__a.sql.conf": "executeInTransaction"},
                     "V1__a.sql.conf, line 1", "expected key=value", id="malformed-line"),
        pytest.param({"V1__a.sql": "SELECT 1;", "V1__a.sql.conf": "encoding=ISO_8859_1"},
                     "V1__a.sql.conf", "UTF-8 only", id="other-encoding"),
        pytest.param({"V1__a.sql": f"{NO_TRANSACTION_MARKER}\nSELECT 1;",
                      "V1__a.sql.conf": "executeInTransaction=true"},
                     "V1__a.sql", "keep one of them", id="conf-contradicts-marker"),
        pytest.param({"1_a.up.sql": "SELECT 1;", "1_a.up.sql.conf": "executeInTransaction=false"},
                     "1_a.up.sql.conf", "are Flyway's", id="conf-in-golang-migrate"),
        pytest.param({"V1__a.sql": "BEGIN;\nSELECT 1;\nCOMMIT;"}, "V1__a.sql, line 1",
                     "BEGIN", id="transaction-control-without-conf"),
    ],
)  # fmt: skip
def test_script_configuration_refusals_name_the_file(
    files: dict[str, str], culprit: str, words: str
) -> None:
    error = refused(files)
    assert culprit in error.message
    assert words in error.message


def test_transaction_control_is_allowed_in_a_script_configured_outside_a_transaction() -> None:
    (m,) = parse_files(
        {"V1__a.sql": "BEGIN;\nSELECT 1;\nCOMMIT;", "V1__a.sql.conf": "executeInTransaction=false"}
    )
    assert m.no_transaction is True


def test_load_directory_reads_script_configuration(tmp_path: Path) -> None:
    (tmp_path / "V1__index.sql").write_text("CREATE INDEX CONCURRENTLY i ON t (x);\n")
    (tmp_path / "V1__index.sql.conf").write_text("executeInTransaction=false\n")
    (tmp_path / "R__view.sql").write_text("SELECT 1;\n")
    migrations = load_directory(tmp_path)
    assert [(m.version, m.no_transaction) for m in migrations] == [("1", True), ("R:view", False)]


# --- dbmate --------------------------------------------------------------------------------------


def test_dbmate_up_and_down_transaction_options_are_separate() -> None:
    both, up_only, down_only, neither = parse_files(
        {
            "1_both.sql": (
                "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY a ON t (x);\n"
                "-- migrate:down transaction:false\nDROP INDEX CONCURRENTLY a;\n"
            ),
            "2_up.sql": (
                "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY b ON t (x);\n"
                "-- migrate:down\nDROP INDEX b;\n"
            ),
            "3_down.sql": (
                "-- migrate:up\nCREATE INDEX c ON t (x);\n"
                "-- migrate:down transaction:false\nDROP INDEX CONCURRENTLY c;\n"
            ),
            "4_neither.sql": "-- migrate:up\nSELECT 1;\n-- migrate:down\nSELECT 2;\n",
        }
    )
    flags = [
        (m.no_transaction, m.down_outside_transaction) for m in (both, up_only, down_only, neither)
    ]
    assert flags == [(True, True), (True, False), (False, True), (False, False)]
    assert both.down_no_transaction is None  # as the up: the checksum of earlier releases
    assert both.checksum == checksum(
        "CREATE INDEX CONCURRENTLY a ON t (x);\n",
        "DROP INDEX CONCURRENTLY a;\n",
        no_transaction=True,
    )
    assert len({m.checksum for m in (both, up_only, down_only, neither)}) == 4


def test_dbmate_down_outside_a_transaction_may_hold_what_a_transaction_refuses() -> None:
    error = refused({"1_a.sql": "-- migrate:up\nSELECT 1;\n-- migrate:down\nCOMMIT;\nSELECT 2;\n"})
    assert "1_a.sql, line 4" in error.message


def test_dbmate_option_value_is_compared_exactly_as_dbmate_does() -> None:
    (m,) = parse_files({"1_a.sql": "-- migrate:up transaction:FALSE foo:bar\nSELECT 1;\n"})
    assert m.no_transaction is False  # dbmate runs it in a transaction too
    (m,) = parse_files({"1_a.sql": "-- migrate:up foo:bar transaction:false\nSELECT 1;\n"})
    assert m.no_transaction is True


@pytest.mark.parametrize(
    ("name", "version", "description"),
    [
        ("20240101120000_add_users.sql", "20240101120000", "add users"),
        ("20240101120000.sql", "20240101120000", "version 20240101120000"),
        ("20240101120000-add-users.sql", "20240101120000", "add-users"),
    ],
)
def test_dbmate_takes_the_leading_digits_as_the_version(
    name: str, version: str, description: str
) -> None:
    (m,) = parse_files({name: "-- migrate:up\nSELECT 1;\n"})
    assert (m.version, m.description, m.source) == (version, description, name)


@pytest.mark.parametrize("fmt", [MigrationFormat.FLYWAY, MigrationFormat.GOLANG_MIGRATE])
def test_separate_down_flags_survive_conversion(fmt: MigrationFormat) -> None:
    migrations = parse_files(
        {
            "1_both.sql": (
                "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY a ON t (x);\n"
                "-- migrate:down transaction:false\nDROP INDEX CONCURRENTLY a;\n"
            ),
            "3_down.sql": (
                "-- migrate:up\nCREATE INDEX c ON t (x);\n"
                "-- migrate:down transaction:false\nDROP INDEX CONCURRENTLY c;\n"
            ),
        }
    )
    again = parse_files(to_format(migrations, fmt), fmt)
    assert [(m.no_transaction, m.down_outside_transaction) for m in again] == [
        (True, True),
        (False, True),
    ]
    back = parse_files(to_format(again, MigrationFormat.DBMATE))
    assert [(m.no_transaction, m.down_outside_transaction) for m in back] == [
        (True, True),
        (False, True),
    ]
    if fmt is MigrationFormat.FLYWAY:  # lossless: a .sql.conf, no SQL changed
        assert comparable(again) == comparable(migrations)


def test_a_down_in_a_transaction_under_an_up_outside_is_flyway_or_dbmate_only() -> None:
    migrations = parse_files(
        {
            "2_up.sql": (
                "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY b ON t (x);\n"
                "-- migrate:down\nDROP INDEX b;\n"
            )
        }
    )
    flyway = to_format(migrations, MigrationFormat.FLYWAY)
    # Flyway's default: the undo runs in a transaction; only the V script needs a .sql.conf.
    assert sorted(flyway) == ["U2__up.sql", "V2__up.sql", "V2__up.sql.conf"]
    assert comparable(parse_files(flyway)) == comparable(migrations)
    with pytest.raises(MigrationSetError, match=r"2_up\.sql: its down script runs in a"):
        to_format(migrations, MigrationFormat.GOLANG_MIGRATE)


# --- golang-migrate ------------------------------------------------------------------------------


def test_golang_migrate_up_only_set() -> None:
    migrations = parse_files(
        {"000001_a.up.sql": "CREATE TABLE a (x int);", "000002_b.up.sql": "SELECT 1;"}
    )
    assert [(m.version, m.down_sql) for m in migrations] == [("1", None), ("2", None)]
    files = to_format(migrations, MigrationFormat.GOLANG_MIGRATE)
    assert sorted(files) == ["000001_a.up.sql", "000002_b.up.sql"]


def test_golang_migrate_empty_title() -> None:
    (m,) = parse_files({"000007_.up.sql": "SELECT 1;", "000007_.down.sql": "SELECT 2;"})
    assert (m.version, m.description, m.down_sql) == ("7", "version 7", "SELECT 2;")


def test_golang_migrate_down_file_marker_runs_only_the_down_outside() -> None:
    (m,) = parse_files(
        {
            "1_a.up.sql": "CREATE INDEX i ON t (x);",
            "1_a.down.sql": f"{NO_TRANSACTION_MARKER}\nDROP INDEX CONCURRENTLY i;",
        }
    )
    assert (m.no_transaction, m.down_outside_transaction) == (False, True)


def test_golang_migrate_down_without_up_names_the_file() -> None:
    error = refused({"000001_a.up.sql": "SELECT 1;", "000002_b.down.sql": "SELECT 1;"})
    assert "000002_b.down.sql has no matching up migration for version 2" in error.message
