"""The loader: three layouts, detection, numeric order, checksums, refusals that name the file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from common.errors import InvalidInput
from common.migrations.loader import (
    NO_TRANSACTION_MARKER,
    MigrationSetError,
    checksum,
    detect_format,
    load_directory,
    normalise_sql,
    parse_files,
    to_format,
)
from models.migrations import Migration, MigrationFormat

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "core"


def versions(migrations: list[Migration]) -> list[str]:
    return [m.version for m in migrations]


def refused(files: dict[str, str], fmt: MigrationFormat | None = None) -> MigrationSetError:
    with pytest.raises(MigrationSetError) as info:
        parse_files(files, fmt)
    return info.value


# --- the three layouts ---------------------------------------------------------------------------


def test_flyway_up_and_undo_with_dotted_and_underscored_versions() -> None:
    migrations = parse_files(
        {
            "V10__ten.sql": "SELECT 10;",
            "V2__create_orders.sql": "CREATE TABLE orders (id int);",
            "U2__create_orders.sql": "DROP TABLE orders;",
            "V1_1__one_one.sql": "SELECT 1.1;",
            "V1.10__one_ten.sql": "SELECT 1.10;",
            "README.md": "not SQL: ignored",
        }
    )
    assert versions(migrations) == ["1.1", "1.10", "2", "10"]
    orders = migrations[2]
    assert orders.description == "create orders"
    assert orders.up_sql == "CREATE TABLE orders (id int);"
    assert orders.down_sql == "DROP TABLE orders;"
    assert orders.source == "V2__create_orders.sql"
    assert orders.checksum == checksum("CREATE TABLE orders (id int);", "DROP TABLE orders;")
    assert orders.no_transaction is False
    assert migrations[0].down_sql is None
    assert migrations[0].source == "V1_1__one_one.sql"


def test_flyway_description_comes_from_the_up_file() -> None:
    (m,) = parse_files({"V1__add_customers.sql": "SELECT 1;", "U1__remove_them.sql": "SELECT 2;"})
    assert m.description == "add customers"


def test_golang_migrate() -> None:
    migrations = parse_files(
        {
            "000010_add_index.up.sql": "CREATE INDEX i ON t (x);",
            "000010_add_index.down.sql": "DROP INDEX i;",
            "000002_create_t.up.sql": "CREATE TABLE t (x int);",
        }
    )
    assert versions(migrations) == ["2", "10"]
    assert migrations[1].description == "add index"
    assert migrations[1].down_sql == "DROP INDEX i;"
    assert migrations[1].source == "000010_add_index.up.sql"
    assert migrations[0].down_sql is None


def test_dbmate_sections_comments_and_transaction_option() -> None:
    migrations = parse_files(
        {
            "20240101120000_create_t.sql": (
                "-- Created by hand.\n/* a block\n   comment */\n\n"
                "-- migrate:up\nCREATE TABLE t (x int);\n\n-- migrate:down\nDROP TABLE t;\n"
            ),
            "20240102120000_index_t.sql": (
                "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY i ON t (x);\n"
            ),
            "20240103120000_empty_down.sql": "-- migrate:up\nSELECT 1;\n-- migrate:down\n\n",
        }
    )
    assert versions(migrations) == ["20240101120000", "20240102120000", "20240103120000"]
    first, second, third = migrations
    # Each section exactly as written, from the line after its marker.
    assert (first.description, first.up_sql, first.down_sql) == (
        "create t",
        "CREATE TABLE t (x int);\n\n",
        "DROP TABLE t;\n",
    )
    assert first.source == "20240101120000_create_t.sql"
    assert first.no_transaction is False
    assert second.no_transaction is True
    assert second.down_sql is None
    # An empty '-- migrate:down' section is dbmate's explicit no-op down, not a missing one.
    assert third.down_sql == "\n"


def test_dbmate_file_with_crlf_and_bom() -> None:
    (m,) = parse_files(
        {"1_t.sql": "\ufeff-- migrate:up\r\nSELECT 1;  \r\n-- migrate:down\r\nSELECT 2;\r\n"}
    )
    assert (m.up_sql, m.down_sql) == ("SELECT 1;  \r\n", "SELECT 2;\r\n")


def test_load_directory_reads_sql_files_only_and_not_subdirectories(tmp_path: Path) -> None:
    (tmp_path / "V1__create_t.sql").write_text("CREATE TABLE t (x int);\n")
    (tmp_path / "U1__create_t.sql").write_text("DROP TABLE t;\n")
    (tmp_path / "V2__add_y.sql").write_bytes(b"ALTER TABLE t ADD COLUMN y int;\r\n")
    (tmp_path / "README.md").write_text("# notes\n")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "schema.sql").write_text("this is not a migration")
    migrations = load_directory(tmp_path)
    assert versions(migrations) == ["1", "2"]
    assert migrations[0].down_sql == "DROP TABLE t;\n"
    assert migrations[1].up_sql == "ALTER TABLE t ADD COLUMN y int;\r\n"  # byte for byte


def test_uploaded_paths_count_by_base_name() -> None:
    migrations = parse_files(
        {"db/migrations/V1__a.sql": "SELECT 1;", "db/migrations/U1__a.sql": "SELECT -1;"}
    )
    assert migrations[0].source == "V1__a.sql"
    assert migrations[0].down_sql == "SELECT -1;"


# --- detection -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"V1__a.sql": "SELECT 1;", "notes.txt": ""}, MigrationFormat.FLYWAY),
        ({"U1__a.sql": "SELECT 1;"}, MigrationFormat.FLYWAY),
        ({"1_a.up.sql": "SELECT 1;", "1_a.down.sql": ""}, MigrationFormat.GOLANG_MIGRATE),
        ({"20240101_a.sql": "-- migrate:up\nSELECT 1;"}, MigrationFormat.DBMATE),
    ],
)
def test_detection(files: dict[str, str], expected: MigrationFormat) -> None:
    assert detect_format(files) is expected


def test_mixed_layouts_are_refused_naming_files_of_each() -> None:
    error = refused({"V1__a.sql": "SELECT 1;", "000002_b.up.sql": "SELECT 2;"})
    assert "mix" in error.message
    assert "V1__a.sql" in error.message
    assert "000002_b.up.sql" in error.message
    error = refused({"1_a.up.sql": "SELECT 1;", "2_b.sql": "-- migrate:up\nSELECT 2;"})
    assert "golang-migrate" in error.message
    assert "dbmate" in error.message


def test_unknown_layout_is_refused_naming_the_files() -> None:
    error = refused({"schema.sql": "SELECT 1;", "data.sql": "SELECT 2;"})
    assert "cannot tell the migration format" in error.message
    assert "schema.sql" in error.message
    assert "data.sql" in error.message


def test_dbmate_names_without_up_marker_are_not_detected_and_the_hint_names_them() -> None:
    error = refused({"20240101_a.sql": "CREATE TABLE t (x int);"})
    assert "cannot tell" in error.message
    assert "20240101_a.sql look like dbmate files but have no '-- migrate:up'" in error.message


def test_explicit_format_skips_detection() -> None:
    (m,) = parse_files({"1_a.up.sql": "-- migrate:up\nSELECT 1;"}, MigrationFormat.GOLANG_MIGRATE)
    assert m.up_sql == "-- migrate:up\nSELECT 1;"


# --- ordering and versions -----------------------------------------------------------------------


def test_versions_order_numerically_part_by_part() -> None:
    files = {f"V{v}__x.sql": "SELECT 1;" for v in ["10", "2", "1.10", "1.2", "1", "1.2.1"]}
    assert versions(parse_files(files)) == ["1", "1.2", "1.2.1", "1.10", "2", "10"]


def test_leading_zeros_do_not_make_another_version() -> None:
    migrations = parse_files({"000010_a.up.sql": "SELECT 10;", "000009_b.up.sql": "SELECT 9;"})
    assert versions(migrations) == ["9", "10"]
    error = refused({"000010_a.up.sql": "SELECT 1;", "10_b.up.sql": "SELECT 2;"})
    assert "000010_a.up.sql" in error.message
    assert "10_b.up.sql" in error.message


# --- transactions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("-- tenantflow:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (x);", True),
        ("CREATE INDEX CONCURRENTLY i ON t (x);\n  --  TenantFlow:No-Transaction  ", True),
        ("-- tenantflow:no-transaction please\nSELECT 1;", False),
        ("SELECT 1; -- tenantflow:no-transaction", False),
        ("SELECT 1;", False),
    ],
)
def test_no_transaction_marker_is_a_whole_line(sql: str, expected: bool) -> None:
    (m,) = parse_files({"V1__idx.sql": sql})
    assert m.no_transaction is expected


def test_no_transaction_marker_in_a_down_script_does_not_count() -> None:
    (m,) = parse_files({"1_a.up.sql": "SELECT 1;", "1_a.down.sql": "-- tenantflow:no-transaction"})
    assert m.no_transaction is False


def test_dbmate_marker_line_also_counts() -> None:
    (m,) = parse_files({"1_a.sql": f"-- migrate:up\n{NO_TRANSACTION_MARKER}\nSELECT 1;"})
    assert m.no_transaction is True


# --- checksums -----------------------------------------------------------------------------------


def test_checksum_is_sha256_of_the_normalised_text() -> None:
    text = "\ufeff\n\nSELECT 1;  \r\n\r\nSELECT 2;\t\r\n\r\n"
    assert normalise_sql(text) == "SELECT 1;\n\nSELECT 2;"
    assert checksum(text) == hashlib.sha256(b"SELECT 1;\n\nSELECT 2;").hexdigest()


def test_checksum_ignores_line_endings_trailing_blanks_and_surrounding_blank_lines() -> None:
    plain = checksum("SELECT 1;\nSELECT 2;")
    assert checksum("SELECT 1;\r\nSELECT 2;\r\n") == plain
    assert checksum("SELECT 1;   \nSELECT 2;\t") == plain
    assert checksum("\n\nSELECT 1;\nSELECT 2;\n\n\n") == plain
    assert checksum("\ufeffSELECT 1;\nSELECT 2;") == plain


def test_checksum_changes_with_the_statements() -> None:
    assert checksum("SELECT 1;") != checksum("SELECT 2;")
    assert checksum("SELECT 1;\nSELECT 2;") != checksum("SELECT 1;\n\nSELECT 2;")
    assert checksum("SELECT 1;") != checksum("  SELECT 1;")


def test_migration_checksum_covers_up_down_and_the_no_transaction_flag() -> None:
    (crlf,) = parse_files({"V1__a.sql": "SELECT 1;  \r\n", "U1__a.sql": "SELECT 2;"})
    (lf,) = parse_files({"V1__a.sql": "SELECT 1;\n", "U1__a.sql": "SELECT 2;\n"})
    assert crlf.checksum == lf.checksum == checksum("SELECT 1;", "SELECT 2;")
    (other_down,) = parse_files({"V1__a.sql": "SELECT 1;\n", "U1__a.sql": "SELECT 3;"})
    (no_down,) = parse_files({"V1__a.sql": "SELECT 1;\n"})
    (noop_down,) = parse_files({"V1__a.sql": "SELECT 1;\n", "U1__a.sql": ""})
    (flagged,) = parse_files({"1_a.sql": "-- migrate:up transaction:false\nSELECT 1;\n"})
    sums = {m.checksum for m in (lf, other_down, no_down, noop_down, flagged)}
    assert len(sums) == 5  # a down added later, or the flag, is a change
    # Without a down or the flag, the checksum is the up SQL's alone, as ledgers recorded it.
    assert no_down.checksum == hashlib.sha256(b"SELECT 1;").hexdigest()


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "fmt", "culprits", "words"),
    [
        pytest.param({"V1__a.sql": "SELECT 1;", "U2__b.sql": "SELECT 1;"}, None,
                     ["U2__b.sql"], "no matching up", id="flyway-undo-without-up"),
        pytest.param({"1_a.up.sql": "x", "1_a.down.sql": "y", "2_b.down.sql": "z"}, None,
                     ["2_b.down.sql"], "no matching up", id="golang-down-without-up"),
        pytest.param({"V3__a.sql": "SELECT 1;", "V03__b.sql": "SELECT 1;"}, None,
                     ["V3__a.sql", "V03__b.sql"], "twice", id="flyway-duplicate-version"),
        pytest.param({"V1_1__a.sql": "SELECT 1;", "V1.1__b.sql": "SELECT 1;"}, None,
                     ["V1_1__a.sql", "V1.1__b.sql"], "twice", id="flyway-dot-and-underscore"),
        pytest.param({"V1__a.sql": "SELECT 1;", "U1__a.sql": "x", "U01__a.sql": "y"}, None,
                     ["U1__a.sql", "U01__a.sql"], "two down", id="flyway-two-undos"),
        pytest.param({"R__my_view.sql": "SELECT 1;", "R__my__view.sql": "SELECT 2;"}, None,
                     ["R__my__view.sql", "R__my_view.sql"], "repeatable migration my view is "
                     "defined twice", id="flyway-repeatable-same-description"),
        pytest.param({"R__.sql": "SELECT 1;"}, None, ["R__.sql"], "needs a description",
                     id="flyway-repeatable-without-description"),
        pytest.param({"V1__a.sql": "SELECT 1;", "schema.sql": "x", "V2_b.sql": "y"}, None,
                     ["schema.sql", "V2_b.sql"], "not flyway file names", id="flyway-stray"),
        pytest.param({"1_a.up.sql": "SELECT 1;", "seed.sql": "x"}, None, ["seed.sql"],
                     "not golang-migrate file names", id="golang-stray"),
        pytest.param({"1_a.sql": "-- migrate:up\nSELECT 1;", "seed.sql": "x"}, None,
                     ["seed.sql"], "not dbmate file names", id="dbmate-stray"),
        pytest.param({"V1__a.sql": "SELECT 1;"}, MigrationFormat.GOLANG_MIGRATE, ["V1__a.sql"],
                     "not golang-migrate", id="wrong-explicit-format"),
        pytest.param({"20240101_a.sql": "CREATE TABLE t (x int);"}, MigrationFormat.DBMATE,
                     ["20240101_a.sql"], "no '-- migrate:up' line", id="dbmate-without-up"),
        pytest.param({"1_a.sql": "SELECT 0;\n-- migrate:up\nSELECT 1;"}, None, ["1_a.sql"],
                     "line 1: only comments", id="dbmate-statement-before-up"),
        pytest.param({"1_a.sql": "-- migrate:down\nSELECT 0;\n-- migrate:up\nSELECT 1;"}, None,
                     ["1_a.sql"], "comes before", id="dbmate-down-before-up"),
        pytest.param({"1_a.sql": "-- migrate:up\nSELECT 1;\n-- migrate:up\nSELECT 2;"}, None,
                     ["1_a.sql"], "more than one", id="dbmate-two-ups"),
        pytest.param({"1_a.sql": "-- migrate:up\nSELECT 1;", "01_b.sql": "-- migrate:up\nx"},
                     None, ["1_a.sql", "01_b.sql"], "twice", id="dbmate-duplicate-version"),
        pytest.param({"V1.2.3.4.5.6.7__a.sql": "SELECT 1;"}, None, ["V1.2.3.4.5.6.7__a.sql"],
                     "integers separated by dots", id="version-too-long"),
        pytest.param({"a/V1__x.sql": "SELECT 1;", "b/V1__x.sql": "SELECT 2;"}, None,
                     ["a/V1__x.sql", "b/V1__x.sql"], "appears twice", id="same-base-name"),
    ],
)  # fmt: skip
def test_refusals_name_the_files(
    files: dict[str, str], fmt: MigrationFormat | None, culprits: list[str], words: str
) -> None:
    error = refused(files, fmt)
    for culprit in culprits:
        assert culprit in error.message
    assert words in error.message


def test_no_sql_files_at_all() -> None:
    assert "no .sql files" in refused({"README.md": "# nothing"}).message


def test_refusals_are_http_400_invalid_migration_set() -> None:
    error = refused({"V1__a.sql": "SELECT 1;", "U2__a.sql": "SELECT 1;"})
    assert isinstance(error, InvalidInput)
    assert error.status_code == 400
    assert error.to_dict()["type"] == "invalid_migration_set"
    assert error.details == {"file": "U2__a.sql", "version": "2"}


def test_many_stray_files_are_listed_briefly_and_all_in_details() -> None:
    files = {"V1__a.sql": "SELECT 1;"} | {f"stray{i:02d}.sql": "x" for i in range(15)}
    error = refused(files)
    assert "stray00.sql" in error.message
    assert "and 5 more" in error.message
    assert len(error.details["files"]) == 15


def test_load_directory_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(MigrationSetError, match="missing is not a directory"):
        load_directory(tmp_path / "missing")
    (tmp_path / "V1__a.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationSetError, match="not a directory"):
        load_directory(tmp_path / "V1__a.sql")


def test_load_directory_refuses_undecodable_files_by_name(tmp_path: Path) -> None:
    (tmp_path / "V1__good.sql").write_text("SELECT 1;")
    (tmp_path / "V2__bad.sql").write_bytes(b"SELECT '\xff\xfe';")
    with pytest.raises(MigrationSetError, match=r"V2__bad\.sql cannot be read as UTF-8") as info:
        load_directory(tmp_path)
    assert info.value.details == {"file": "V2__bad.sql"}


def test_load_directory_with_no_sql_files(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# empty")
    with pytest.raises(MigrationSetError, match=r"no \.sql files"):
        load_directory(tmp_path)


# --- to_format -----------------------------------------------------------------------------------


def comparable(migrations: list[Migration]) -> list[tuple[object, ...]]:
    return [
        (m.version, m.checksum, m.up_sql, m.down_sql, m.no_transaction, m.description)
        for m in migrations
    ]


@pytest.mark.parametrize("fmt", list(MigrationFormat), ids=lambda f: f.value)
def test_round_trip_of_the_example_in_every_format(fmt: MigrationFormat) -> None:
    original = load_directory(EXAMPLE)
    assert len(original) >= 6
    assert all(m.down_sql for m in original)
    files = to_format(original, fmt)
    assert comparable(parse_files(files, fmt)) == comparable(original)
    assert comparable(parse_files(files)) == comparable(original)  # detected


@pytest.mark.parametrize("source", list(MigrationFormat), ids=lambda f: f.value)
@pytest.mark.parametrize("target", list(MigrationFormat), ids=lambda f: f.value)
def test_conversion_between_every_pair_of_formats(
    source: MigrationFormat, target: MigrationFormat
) -> None:
    original = load_directory(EXAMPLE)
    converted = parse_files(to_format(parse_files(to_format(original, source)), target))
    assert comparable(converted) == comparable(original)


def test_to_format_file_names() -> None:
    (m,) = parse_files({"V7__add_orders.sql": "SELECT 1;", "U7__add_orders.sql": "SELECT 2;"})
    assert sorted(to_format([m], MigrationFormat.FLYWAY)) == [
        "U7__add_orders.sql",
        "V7__add_orders.sql",
    ]
    assert sorted(to_format([m], MigrationFormat.GOLANG_MIGRATE)) == [
        "000007_add_orders.down.sql",
        "000007_add_orders.up.sql",
    ]
    assert to_format([m], MigrationFormat.DBMATE) == {
        "000007_add_orders.sql": "-- migrate:up\nSELECT 1;\n-- migrate:down\nSELECT 2;"
    }


def test_no_transaction_survives_every_conversion() -> None:
    (dbmate,) = parse_files({"5_idx.sql": "-- migrate:up transaction:false\nCREATE INDEX i;"})
    for fmt in MigrationFormat:
        (again,) = parse_files(to_format([dbmate], fmt), fmt)
        assert again.no_transaction is True, fmt
    # dbmate has an option for it, Flyway a .sql.conf; golang-migrate needs the marker line
    # (so its SQL gains it).
    assert parse_files(to_format([dbmate], MigrationFormat.DBMATE))[0].up_sql == "CREATE INDEX i;"
    flyway_files = to_format([dbmate], MigrationFormat.FLYWAY)
    assert flyway_files["V5__idx.sql.conf"] == "executeInTransaction=false\n"
    assert comparable(parse_files(flyway_files)) == comparable([dbmate])
    golang = parse_files(to_format([dbmate], MigrationFormat.GOLANG_MIGRATE))[0]
    assert golang.up_sql == f"{NO_TRANSACTION_MARKER}\nCREATE INDEX i;"
    # A marker already in the SQL is not doubled, and round-trips through dbmate unchanged.
    (marked,) = parse_files({"V1__idx.sql": f"{NO_TRANSACTION_MARKER}\nCREATE INDEX i;"})
    for fmt in MigrationFormat:
        assert comparable(parse_files(to_format([marked], fmt))) == comparable([marked])


def test_dotted_versions_cannot_be_written_as_integer_only_formats() -> None:
    migrations = parse_files({"V1__a.sql": "SELECT 1;", "V1_1__b.sql": "SELECT 2;"})
    assert sorted(to_format(migrations, MigrationFormat.FLYWAY)) == ["V1.1__b.sql", "V1__a.sql"]
    for fmt in (MigrationFormat.GOLANG_MIGRATE, MigrationFormat.DBMATE):
        with pytest.raises(MigrationSetError, match=r"V1_1__b\.sql: version 1\.1 cannot"):
            to_format(migrations, fmt)
