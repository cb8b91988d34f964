"""Lock-risk warnings on the command line: ``sets lint DIR`` offline, and under dry-run plans."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.lint import _file_line, print_fleet_risks
from cli.main import app
from common.migrations.lint import lint_set
from common.migrations.loader import load_directory
from tests.cli.test_commands import EXAMPLE, gateway_url, run_cli
from tests.conftest import TargetFactory, Tokens

__all__ = ["gateway_url"]  # the fixture, used by the tests below

runner = CliRunner()


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def test_sets_lint_exits_1_on_errors_and_names_file_and_line(tmp_path: Path) -> None:
    directory = _write(
        tmp_path / "busy",
        {
            "20240101000000_orders.sql": "-- migrate:up\nCREATE TABLE orders (id int, c int);\n"
            "CREATE INDEX orders_c ON orders (c);\n-- migrate:down\nDROP TABLE orders;\n",
            "20240102000000_orders_c.sql": "-- the customer column\n-- migrate:up\n\n"
            "ALTER TABLE orders ALTER COLUMN c TYPE bigint;\n-- migrate:down\n",
        },
    )
    result = runner.invoke(app, ["sets", "lint", str(directory)])
    assert result.exit_code == 1, result.output
    # Line 4 of the file (line 2 of the version's up section).
    assert "20240102000000_orders_c.sql 4: error changing-column-type" in result.output
    assert "safe form: add a column of the new type" in result.output
    assert "2 versions: 1 errors, 0 warnings" in result.output

    down = runner.invoke(app, ["sets", "lint", str(directory), "--down", "--json"])
    assert down.exit_code == 0, down.output  # a warning only
    answer = json.loads(down.output)
    assert answer["direction"] == "down"
    assert [r["rule"] for v in answer["versions"] for r in v["warnings"]] == ["ban-drop-table"]
    strict = runner.invoke(app, ["sets", "lint", str(directory), "--down", "--strict"])
    assert strict.exit_code == 1
    assert "20240101000000_orders.sql 5: warning ban-drop-table" in strict.output


def test_sets_lint_exits_0_when_clean_and_2_for_an_invalid_set(tmp_path: Path) -> None:
    clean = _write(
        tmp_path / "clean",
        {
            "V1__t.sql": "CREATE TABLE t (a int);\nCREATE INDEX t_a ON t (a);",
            "V2__t_b.sql": "-- tenantflow:no-transaction\nCREATE INDEX CONCURRENTLY t_b ON t (a);",
        },
    )
    result = runner.invoke(app, ["sets", "lint", str(clean)])
    assert result.exit_code == 0, result.output
    assert "2 versions: 0 errors, 0 warnings" in result.output
    broken = _write(tmp_path / "broken", {"V1__x.sql": "SELECT 1;", "V1__y.sql": "SELECT 2;"})
    refused = runner.invoke(app, ["sets", "lint", str(broken)])
    assert refused.exit_code == 2
    assert "version 1 is defined twice" in refused.output


def test_fleet_risks_show_only_versions_some_target_would_apply(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lint = lint_set("core", load_directory(EXAMPLE)).model_dump(mode="json")
    at_4 = {"targets": {"a": {"state": "succeeded", "from_version": "4"}}}
    print_fleet_risks(lint, at_4, None)
    shown = capsys.readouterr().out
    assert "5 rename full name to display name:" in shown
    assert "6 order status enum:" in shown
    assert "4 backfill" not in shown
    print_fleet_risks(lint, at_4, "5")
    assert "6 order status enum" not in capsys.readouterr().out
    # A repeatable migration some target would apply again is shown whatever its version.
    with_repeatable = dict(lint)
    with_repeatable["versions"] = [
        *lint["versions"],
        {
            "version": "R:refresh views",
            "description": "refresh views",
            "warnings": lint["versions"][4]["warnings"],
        },
    ]
    at_6: dict[str, Any] = {"targets": {"a": {"state": "succeeded", "from_version": "6"}}}
    print_fleet_risks(with_repeatable, at_6, None)
    assert capsys.readouterr().out == "lock risks: none in the planned versions\n"
    at_6["targets"]["a"]["repeatables"] = ["R:refresh views"]
    print_fleet_risks(with_repeatable, at_6, None)
    assert "R:refresh views refresh views:" in capsys.readouterr().out
    up_to_date = {"targets": {"a": {"state": "up_to_date", "from_version": "6"}}}
    print_fleet_risks(lint, up_to_date, None)
    assert capsys.readouterr().out == ""


async def test_dry_runs_print_the_lock_risks(
    gateway_url: str, tokens: Tokens, make_target: TargetFactory
) -> None:
    token = tokens.token("infra-admin")
    name = f"core-{uuid.uuid4().hex[:6]}"
    label = uuid.uuid4().hex[:8]
    registered = await run_cli(gateway_url, token, "sets", "register", str(EXAMPLE), "--name", name)
    assert registered.returncode == 0, registered.stderr
    target = await make_target()
    added = await run_cli(
        gateway_url,
        token,
        "db",
        "add",
        "--name",
        f"lint-{uuid.uuid4().hex[:6]}",
        "--host",
        target.host,
        "--port",
        str(target.port),
        "--database",
        target.database,
        "--user",
        target.user,
        "--label",
        f"lint={label}",
        "--json",
        extra_env={"TENANTFLOW_TARGET_PASSWORD": target.password},
    )
    assert added.returncode == 0, added.stderr
    database_id = json.loads(added.stdout)["id"]

    plan = await run_cli(
        gateway_url, token, "migrate", "target", "--set", name, "--database", database_id,
        "--dry-run",
    )  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    assert "line 2: warning renaming-column" in plan.stdout
    assert "line 6: error require-concurrent-index-creation" in plan.stdout

    fleet = await run_cli(
        gateway_url, token, "migrate", "apply", "--set", name, "--selector", f"lint={label}",
        "--dry-run",
    )  # fmt: skip
    assert fleet.returncode == 0, fleet.stderr
    assert "lock risks of the planned versions" in fleet.stdout
    assert "6 order status enum:" in fleet.stdout
    assert "error setting-not-nullable-field" in fleet.stdout


def test_findings_name_the_right_file_and_line_with_crlf_and_any_undo_name(
    tmp_path: Path,
) -> None:
    # Windows line ends are run byte for byte: the findings still point into the files.
    dbmate = tmp_path / "dbmate"
    dbmate.mkdir()
    (dbmate / "20240101000000_t.sql").write_bytes(
        b"-- migrate:up\r\nCREATE TABLE t (a int);\r\n-- migrate:down\r\n"
        b"CREATE TABLE x (a int);\r\nDROP TABLE t;\r\n"
    )
    down = runner.invoke(app, ["sets", "lint", str(dbmate), "--down"])
    assert down.exit_code == 0, down.output
    assert "20240101000000_t.sql 5: warning ban-drop-table" in down.output
    # Flyway's undo file may describe itself differently from its V file.
    flyway = tmp_path / "flyway"
    flyway.mkdir()
    (flyway / "V1__t.sql").write_bytes(b"CREATE TABLE t (a int);\r\n")
    (flyway / "U1__undo_t.sql").write_bytes(b"-- undo\r\nDROP TABLE t;\r\n")
    undo = runner.invoke(app, ["sets", "lint", str(flyway), "--down"])
    assert undo.exit_code == 0, undo.output
    assert "U1__undo_t.sql 2: warning ban-drop-table" in undo.output


def test_a_version_without_a_file_is_named_by_its_version(tmp_path: Path) -> None:
    [migration] = load_directory(_write(tmp_path / "one", {"V3__t.sql": "DROP TABLE t;"}))
    assert _file_line(tmp_path / "one", migration, migration.up_sql, False) == ("V3__t.sql", 0)
    unsourced = migration.model_copy(update={"source": None})
    assert _file_line(tmp_path / "one", unsourced, unsourced.up_sql, False) == ("version 3", 0)
