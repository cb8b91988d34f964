"""The loader: three layouts, numeric order, checksums, refusals that name the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.migrations.loader import (
    MigrationSetError,
    checksum,
    detect_format,
    load_directory,
    parse_files,
    to_format,
)
from models.migrations import MigrationFormat

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "core"


def test_flyway_with_undo_and_dotted_versions() -> None:
    migrations = parse_files(
        {
            "V10__ten.sql": "SELECT 10;",
            "V2__two.sql": "SELECT 2;",
            "U2__two.sql": "SELECT -2;",
            "V1_1__one_one.sql": "SELECT 1.1;",
            "V1_10__one_ten.sql": "SELECT 1.10;",
            "notes.txt": "ignored",
        }
    )
    assert [m.version for m in migrations] == ["1.1", "1.10", "2", "10"]
    two = migrations[2]
    assert (two.description, two.down_sql, two.source) == ("two", "SELECT -2;", "V2__two.sql")
    assert migrations[0].down_sql is None


def test_golang_migrate() -> None:
    migrations = parse_files(
        {
            "000010_add_index.up.sql": "CREATE INDEX i ON t (x);",
            "000010_add_index.down.sql": "DROP INDEX i;",
            "000002_create_t.up.sql": "CREATE TABLE t (x int);",
        }
    )
    assert [m.version for m in migrations] == ["2", "10"]
    assert migrations[1].description == "add index"
    assert migrations[1].down_sql == "DROP INDEX i;"


def test_dbmate_sections_and_transaction_option() -> None:
    migrations = parse_files(
        {
            "20240101120000_create_t.sql": (
                "-- migrate:up\nCREATE TABLE t (x int);\n\n-- migrate:down\nDROP TABLE t;\n"
            ),
            "20240102120000_index.sql": (
                "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY i ON t (x);\n"
            ),
        }
    )
    assert [m.version for m in migrations] == ["20240101120000", "20240102120000"]
    assert migrations[0].up_sql == "CREATE TABLE t (x int);"
    assert migrations[0].down_sql == "DROP TABLE t;"
    assert migrations[1].no_transaction is True
    assert migrations[1].down_sql is None


def test_no_transaction_marker() -> None:
    (m,) = parse_files(
        {"V1__idx.sql": "-- tenantflow:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (x);"}
    )
    assert m.no_transaction is True


def test_checksum_normalises_line_endings_and_trailing_blanks() -> None:
    assert checksum("SELECT 1;  \r\nSELECT 2;\r\n\r\n") == checksum("SELECT 1;\nSELECT 2;")
    assert checksum("\ufeffSELECT 1;") == checksum("SELECT 1;")
    assert checksum("SELECT 1;") != checksum("SELECT 2;")


def test_detection_refuses_mixed_or_unknown_layouts() -> None:
    with pytest.raises(MigrationSetError, match="mix"):
        detect_format(["V1__a.sql", "000002_b.up.sql"])
    with pytest.raises(MigrationSetError, match="cannot tell"):
        detect_format(["schema.sql"])


@pytest.mark.parametrize(
    ("files", "culprit"),
    [
        ({"V1__a.sql": "SELECT 1;", "U2__b.sql": "SELECT 1;"}, "U2__b.sql"),
        ({"V1__a.sql": "SELECT 1;", "V01__b.sql": "SELECT 1;"}, "V01__b.sql"),
        ({"V1__a.sql": "   \n"}, "V1__a.sql"),
        ({"V1__a.sql": "SELECT 1;", "R__view.sql": "SELECT 1;"}, "R__view.sql"),
        ({"V1__a.sql": "SELECT 1;", "schema.sql": "SELECT 1;"}, "schema.sql"),
        (
            {"000001_a.up.sql": "x", "000001_a.down.sql": "y", "000002_b.down.sql": "z"},
            "000002_b.down.sql",
        ),
        ({"20240101_a.sql": "CREATE TABLE t (x int);"}, None),
    ],
)
def test_refusals_name_the_file(files: dict[str, str], culprit: str | None) -> None:
    with pytest.raises(MigrationSetError) as info:
        parse_files(files)
    if culprit is not None:
        assert culprit in info.value.message


def test_dbmate_file_without_up_section_is_refused_by_name() -> None:
    with pytest.raises(MigrationSetError, match=r"20240101_a\.sql has no .-- migrate:up."):
        parse_files({"20240101_a.sql": "CREATE TABLE t (x int);"}, MigrationFormat.DBMATE)


def test_load_directory_errors(tmp_path: Path) -> None:
    with pytest.raises(MigrationSetError, match="not a directory"):
        load_directory(tmp_path / "missing")
    (tmp_path / "V1__bad.sql").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(MigrationSetError, match=r"V1__bad\.sql"):
        load_directory(tmp_path)


@pytest.mark.parametrize("fmt", list(MigrationFormat), ids=lambda f: f.value)
def test_round_trip_of_the_example_in_every_format(fmt: MigrationFormat) -> None:
    original = load_directory(EXAMPLE)
    assert len(original) >= 6
    assert all(m.down_sql for m in original)
    again = parse_files(to_format(original, fmt), fmt)
    assert [(m.version, m.checksum, m.up_sql, m.down_sql) for m in again] == [
        (m.version, m.checksum, m.up_sql, m.down_sql) for m in original
    ]
