"""Issue 9, registration points: what cannot run as a version is refused with file and line
(2, 3), empty versions (6), checksums and stored SQL (7); PostgreSQL's parser via pglast."""

from __future__ import annotations

import pytest

from common.migrations.loader import NO_TRANSACTION_MARKER, MigrationSetError, parse_files
from common.migrations.sql import (
    ALREADY_GONE,
    ALREADY_THERE,
    IndexBuild,
    convergence,
    has_marker,
    refusals,
    split_statements,
)


def refused(files: dict[str, str]) -> MigrationSetError:
    with pytest.raises(MigrationSetError) as caught:
        parse_files(files)
    return caught.value


@pytest.mark.parametrize(
    ("sql", "line", "words"),
    [
        ("CREATE TABLE a (id int);\nCOMMIT;\n", 2, "COMMIT ends the transaction"),
        ("BEGIN;\nCREATE TABLE a (id int);\nCOMMIT;\n", 1, "BEGIN ends the transaction"),
        ("CREATE TABLE a (id int);\n\nROLLBACK;", 3, "ROLLBACK ends the transaction"),
        ("CREATE TABLE a (id int);\nEND;", 2, "COMMIT ends the transaction"),
        ("START TRANSACTION;\nSELECT 1;", 1, "START TRANSACTION"),
        ("CREATE TABLE a (id int);\nCOPY a FROM STDIN;\n1\n\\.\n", 2, "COPY ... FROM STDIN"),
        ("CREATE TABLE a (id int);\nCOPY a TO STDOUT;", 2, "COPY ... TO STDOUT"),
        ("SELECT 1;\n\\i other.sql\n", 2, "psql meta-command"),
        ("\\set ON_ERROR_STOP on\nSELECT 1;", 1, "psql meta-command"),
        ("SELECT 1;\n\\connect other\n", 2, "psql meta-command"),
    ],
)
def test_what_cannot_run_as_a_version_is_refused_with_file_and_line(
    sql: str, line: int, words: str
) -> None:
    error = refused({"V1__a.sql": "SELECT 1;", "V2__b.sql": sql})
    assert error.message.startswith(f"V2__b.sql, line {line}: "), error.message
    assert words in error.message
    assert error.details is not None and error.details["line"] == line


def test_dbmate_lines_count_from_the_top_of_the_file() -> None:
    error = refused({"1_a.sql": "-- a comment\n-- migrate:up\nCREATE TABLE a (id int);\nCOMMIT;\n"})
    assert error.message.startswith("1_a.sql, line 4: COMMIT"), error.message
    down = refused({"1_a.sql": "-- migrate:up\nSELECT 1;\n-- migrate:down\nSELECT 2;\nCOMMIT;"})
    assert down.message.startswith("1_a.sql, line 5: "), down.message


def test_down_scripts_are_checked_too() -> None:
    error = refused({"V1__a.sql": "SELECT 1;", "U1__a.sql": "DROP TABLE a;\nCOMMIT;"})
    assert error.message.startswith("U1__a.sql, line 2: COMMIT"), error.message


def test_transaction_control_is_allowed_in_a_no_transaction_version() -> None:
    sql = f"{NO_TRANSACTION_MARKER}\nBEGIN;\nCREATE TABLE a (id int);\nCOMMIT;\n"
    (m,) = parse_files({"1_a.up.sql": sql})
    assert m.no_transaction is True
    # Savepoints stay inside the engine's transaction and are fine anywhere.
    parse_files({"V1__a.sql": "SAVEPOINT s; SELECT 1; ROLLBACK TO SAVEPOINT s; RELEASE s;"})
    # COPY FROM STDIN never is.
    assert "COPY" in refused({"1_a.up.sql": f"{NO_TRANSACTION_MARKER}\nCOPY a FROM STDIN;"}).message
    # A transaction it begins must end in it, or the version's changes would be lost.
    never_ended = f"{NO_TRANSACTION_MARKER}\nBEGIN;\nCREATE TABLE a (id int);\n"
    error = refused({"1_a.up.sql": never_ended})
    assert error.message.startswith("1_a.up.sql, line 2: this transaction is never committed")
    parse_files({"1_a.up.sql": f"{NO_TRANSACTION_MARKER}\nBEGIN;\nSELECT 1;\nROLLBACK;\n"})


def test_words_inside_strings_comments_and_bodies_are_not_statements() -> None:
    sql = (
        "-- COMMIT; \\i nothing\n/* ROLLBACK; */\nSELECT 'COMMIT; \\i x';\n"
        "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$;\n"
        "CREATE FUNCTION g() RETURNS int BEGIN ATOMIC SELECT 1; END;\n"
    )
    (m,) = parse_files({"V1__a.sql": sql})
    assert m.up_sql == sql


def test_nul_in_sql_is_refused_with_file_and_line() -> None:
    error = refused({"V1__a.sql": "SELECT 1;\nSELECT '\0';"})
    assert error.message.startswith("V1__a.sql, line 2: contains a NUL"), error.message


def test_empty_and_comment_only_versions_are_no_op_versions() -> None:
    ms = parse_files(
        {
            "V1__a.sql": "",
            "U1__a.sql": "",
            "V2__b.sql": "-- only for the other engine\n",
            "V3__c.sql": "   \n\r\n",
        }
    )
    assert [m.up_sql for m in ms] == ["", "-- only for the other engine\n", "   \n\r\n"]
    assert ms[0].down_sql == ""  # an explicit no-op down
    assert ms[1].down_sql is None  # no down at all: still refused by a rollback
    assert len({m.checksum for m in ms}) == 3


def test_stored_sql_is_byte_for_byte_what_was_written() -> None:
    sql = "INSERT INTO t VALUES ('trailing   \n   spaces   ');   \r\n\n\n"
    (m,) = parse_files({"V1__a.sql": "\ufeff" + sql, "U1__a.sql": "DELETE FROM t;  \n"})
    assert m.up_sql == sql  # only the BOM, an encoding mark, is gone
    assert m.down_sql == "DELETE FROM t;  \n"


def test_the_marker_counts_only_as_the_documented_line() -> None:
    inside_block = f"/*\n{NO_TRANSACTION_MARKER}\n*/\nCREATE INDEX i ON t (x);"
    inside_body = f"DO $$\nBEGIN\n{NO_TRANSACTION_MARKER}\nEND $$;"
    inside_string = f"SELECT '\n{NO_TRANSACTION_MARKER}\n';"
    for sql in (inside_block, inside_body, inside_string):
        assert not has_marker(sql, NO_TRANSACTION_MARKER)
        (m,) = parse_files({"V1__a.sql": sql})
        assert m.no_transaction is False
    assert has_marker(f"  {NO_TRANSACTION_MARKER}\nSELECT 1;", NO_TRANSACTION_MARKER)
    assert has_marker("--TENANTFLOW:NO-TRANSACTION\nSELECT 1;", NO_TRANSACTION_MARKER)


def test_split_statements_gives_each_statement_with_its_line() -> None:
    sql = (
        "-- two builds\nCREATE INDEX CONCURRENTLY a ON t (x);\n\n"
        "CREATE INDEX CONCURRENTLY b ON t (y)\n"
    )
    found = split_statements(sql)
    assert [(s.text, s.line) for s in found] == [
        ("CREATE INDEX CONCURRENTLY a ON t (x)", 2),
        ("CREATE INDEX CONCURRENTLY b ON t (y)", 4),
    ]
    # Text the parser cannot read is still split (PostgreSQL then reports its own error).
    unparsable = "SELEC 1; SELECT ';';\n-- c\nSELECT 2"
    assert [s.text for s in split_statements(unparsable)] == ["SELEC 1", "SELECT ';'", "SELECT 2"]


def test_how_a_statement_run_again_converges() -> None:
    """What a retry of a no-transaction version checks first and which errors mean "done"."""
    index = convergence('CREATE UNIQUE INDEX CONCURRENTLY ix ON "Sales".orders (id)')
    assert index.index == IndexBuild("ix", '"Sales"."orders"')
    assert convergence("CREATE INDEX CONCURRENTLY ix ON orders (id)").index == IndexBuild(
        "ix", '"orders"'
    )
    # An unnamed index gets a name from PostgreSQL: nothing to look for.
    assert convergence("CREATE INDEX CONCURRENTLY ON orders (id)").index is None
    assert convergence("CREATE TABLE t (id int)").done_codes == ALREADY_THERE
    for drop in (
        "DROP INDEX CONCURRENTLY ix",
        "DROP TABLE t",
        "ALTER TABLE t DROP COLUMN a, DROP CONSTRAINT c",
    ):
        assert convergence(drop).done_codes == ALREADY_THERE | ALREADY_GONE, drop
    # A drop mixed with an addition is not safely "done" when something is missing.
    assert convergence("ALTER TABLE t DROP COLUMN a, ADD COLUMN b int").done_codes == ALREADY_THERE
    assert convergence("SELEC 1").done_codes == ALREADY_THERE


def test_empty_statements_between_semicolons_are_dropped() -> None:
    assert [s.text for s in split_statements("SELECT 1;;\n;SELECT 2;")] == ["SELECT 1", "SELECT 2"]
    assert [(s.text, s.offset) for s in split_statements("SELEC 1;; SELEC 2;")] == [
        ("SELEC 1", 0),
        ("SELEC 2", 10),
    ]


def test_text_the_scanner_refuses_is_one_statement_for_postgresql_to_judge() -> None:
    unterminated = "  SELECT 'no end; SELECT 2"
    assert [(s.text, s.offset, s.line) for s in split_statements(unterminated)] == [
        ("SELECT 'no end; SELECT 2", 0, 1)
    ]
    assert refusals(unterminated, no_transaction=False) == []


def test_a_savepoint_does_not_close_a_no_transaction_versions_begin() -> None:
    (refusal,) = refusals("SELECT 1;\nBEGIN;\nSAVEPOINT a;\n", no_transaction=True)
    assert refusal.line == 2
    assert "never committed" in refusal.message
    assert refusals("BEGIN;\nSAVEPOINT a;\nCOMMIT;", no_transaction=True) == []


def test_more_than_one_statement_converges_as_already_there() -> None:
    both = convergence("CREATE INDEX CONCURRENTLY ix ON t (a); DROP TABLE u")
    assert both.index is None
    assert both.done_codes == ALREADY_THERE
