"""Lock-risk warnings on the command line: ``tenantflow sets lint DIR`` (offline, no gateway)
and the warnings printed under a dry run's plan."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from common.migrations.lint import lint_set
from common.migrations.loader import MigrationSetError, load_directory
from common.migrations.sql import line_at
from models.lint import LockRiskSeverity
from models.migrations import Migration, MigrationFormat, version_key

_COLOURS = {LockRiskSeverity.ERROR.value: "red", LockRiskSeverity.WARNING.value: "yellow"}


def print_risks(risks: Iterable[Mapping[str, Any]], where: str = "line", offset: int = 0) -> None:
    """One finding per line (``where`` and the line, severity, rule, message) and its advice
    under it; ``offset``: lines of the file before the version's SQL."""
    for risk in risks:
        severity = str(risk["severity"])
        typer.secho(
            f"  {where} {int(risk['line']) + offset}: {severity} {risk['rule']}: {risk['message']}",
            fg=_COLOURS.get(severity),
        )
        typer.echo(f"      safe form: {risk['advice']}")


def _file_line(directory: Path, migration: Migration, sql: str, down: bool) -> tuple[str, int]:
    """The file a version's script is in and the lines before it there (dbmate keeps up and
    down in one file; Flyway's U and golang-migrate's .down files sit beside the up file)."""
    source = migration.source or f"version {migration.version}"
    candidates = [source]
    if down and migration.source:
        # Flyway pairs V<version>__a.sql with U<version>__<any description>.sql.
        prefix, sep, _ = source.partition("__")
        undo = sorted(p.name for p in directory.glob(f"U{prefix[1:]}__*.sql")) if sep else []
        candidates = [*undo, source.replace(".up.sql", ".down.sql"), source]
    for name in candidates:
        try:
            # Bytes decoded as they are: reading as text would turn CRLF into LF, and a script
            # with CRLF line ends (run byte for byte) would then be found in no file.
            text = (directory / name).read_bytes().decode("utf-8").removeprefix("\ufeff")
        except (OSError, UnicodeDecodeError):
            continue
        at = text.find(sql) if sql else -1
        if at >= 0:
            return name, line_at(text, at) - 1
    return source, 0


def sets_lint(
    directory: Annotated[Path, typer.Argument(exists=True, file_okay=False, readable=True)],
    fmt: Annotated[
        MigrationFormat | None, typer.Option("--format", help="Detected when omitted.")
    ] = None,
    down: Annotated[bool, typer.Option("--down", help="Lint the down scripts.")] = False,
    lock_timeout_ms: Annotated[
        int,
        typer.Option(
            min=0,
            help="The lock_timeout runs will use (default 5000, as runs); 0 checks that "
            "versions set one themselves.",
        ),
    ] = 5_000,
    strict: Annotated[bool, typer.Option(help="Exit 1 on warnings too, not only errors.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """Lock-risk warnings of every version in DIRECTORY, offline (docs/lock-risks.md).

    Exit 0 when clean, 1 when a finding is error-level (or any finding with --strict), 2 when
    the directory is not a valid migration set.
    """
    try:
        migrations = load_directory(directory, fmt)
    except MigrationSetError as exc:
        typer.secho(f"error: {exc.message}", fg="red", err=True)
        raise typer.Exit(2) from None
    result = lint_set(directory.name, migrations, down=down, lock_timeout_ms=lock_timeout_ms)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    else:
        by_version = {m.version: m for m in migrations}
        for version in result.versions:
            if not version.warnings:
                continue
            migration = by_version[version.version]
            sql = (migration.down_sql or "") if down else migration.up_sql
            name, offset = _file_line(directory, migration, sql, down)
            typer.echo(f"{version.version} {version.description}:")
            print_risks((r.model_dump(mode="json") for r in version.warnings), name, offset)
        typer.echo(
            f"{len(result.versions)} versions: {result.errors} errors, {result.warnings} warnings"
        )
    if result.errors or (strict and result.warnings):
        raise typer.Exit(1)


def print_fleet_risks(lint: Mapping[str, Any], state: Mapping[str, Any], to: str | None) -> None:
    """After a fleet dry run: the findings of the versions some target would apply (newer than
    the oldest version a planning target was at, up to ``to``), and of the repeatable
    migrations some target would apply again."""
    planning = [t for t in (state.get("targets") or {}).values() if t.get("state") == "succeeded"]
    if not planning and state.get("targets"):
        return  # every target up to date (or failed): nothing would be applied
    starts = [t.get("from_version") for t in planning]
    again = {r for t in planning for r in t.get("repeatables") or ()}
    floor = min((version_key(v) for v in starts if v), default=()) if None not in starts else ()
    ceiling = version_key(to) if to else None

    def planned(version: str) -> bool:
        if version in again:
            return True
        return version_key(version) > floor and (ceiling is None or version_key(version) <= ceiling)

    shown = [v for v in lint.get("versions", []) if v["warnings"] and planned(v["version"])]
    if not shown:
        typer.echo("lock risks: none in the planned versions")
        return
    typer.echo("lock risks of the planned versions (docs/lock-risks.md):")
    for version in shown:
        typer.echo(f"{version['version']} {version['description']}:")
        print_risks(version["warnings"])
