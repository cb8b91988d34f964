"""``tenantflow restore``: the catalog from a ``tenantflow backup`` archive, all or nothing.

Everything that can refuse is checked before the catalog is touched, from the archive itself
(never from a manifest that could be lost or stale): it is a custom-format archive pg_restore
reads in full; it holds a tenantflow catalog whose schema this tenantflow knows; every credential
is under a configured key id, and one credential per key id and column decrypts (a key id with
other key material would pass the id check alone). Then the catalog: no other session is
connected (workers and gateways stopped), no table the archive would not replace, and no data
unless ``--force``. The restore itself is one ``pg_restore --single-transaction --clean``: a
failure rolls it back whole. Row counts are compared with the archive's afterwards.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import typer

from cli.backup import (
    SCHEMA_TABLE,
    CatalogContents,
    JsonOption,
    PgBinOption,
    connect_catalog,
    echo_contents,
    read_contents,
    sha256_of,
    short,
)
from cli.pg_tools import (
    ARCHIVE_MAGIC,
    PgTool,
    PgToolFailed,
    candidates,
    copy_blocks,
    find_tool,
    first_error_line,
    run_tool,
    split_password,
    tool_version,
)
from common.catalog import databases, load_catalog_migrations, servers, tenants, webhooks
from common.crypto import CredentialCipher, CredentialDecryptionError, KeyRing
from common.errors import TenantflowError
from common.settings import Settings

# (table, column) -> (id column, the AES-GCM context of that row): the columns whose tokens can be
# decrypted to prove a key; other *_encrypted columns only have their key ids checked.
_CONTEXTS: dict[tuple[str, str], tuple[str, Callable[[str], str]]] = {
    ("databases", "password_encrypted"): ("id", lambda v: databases.password_context(uuid.UUID(v))),
    ("servers", "admin_password_encrypted"): (
        "id",
        lambda v: servers.admin_password_context(uuid.UUID(v)),
    ),
    ("tenants", "password_encrypted"): ("tenant_id", tenants.password_context),
    ("webhook_endpoints", "secret_encrypted"): (
        "id",
        lambda v: webhooks.secret_context(uuid.UUID(v)),
    ),
}
_TOC_TABLE = re.compile(r"^\d+; \d+ \d+ TABLE (?!DATA )(?P<schema>\S+) (?P<name>\S+) ")
_UNSUPPORTED = re.compile(r"unsupported version \((?P<major>\d+)\.\d+\)")


def _too_new(failure: str) -> bool:
    """Whether pg_restore refused the archive's format version as one it does not know yet. A
    version below 1.0 is no format at all: a damaged header, not a newer pg_dump."""
    match = _UNSUPPORTED.search(failure)
    return match is not None and int(match["major"]) >= 1


class RestoreRefused(TenantflowError):
    """The archive or the catalog failed a check; the catalog was not touched."""

    status_code = 409
    error_type = "restore_refused"


@dataclass
class RestoreResult:
    """What ``tenantflow restore`` did."""

    path: str
    sha256: str
    pg_restore: str
    replaced: dict[str, int]
    contents: CatalogContents
    verified: bool
    shipped_schema_version: int
    decrypted_key_ids: list[str] = field(default_factory=list)


async def _pick_pg_restore(archive: Path, pg_bin: Path | None) -> tuple[PgTool, set[str]]:
    """The first pg_restore (PATH, then the wheel) that reads the archive's table of contents,
    and the tables the archive holds."""
    try:
        with archive.open("rb") as stream:
            magic = stream.read(len(ARCHIVE_MAGIC))
    except OSError as exc:
        raise RestoreRefused(
            f"{archive} cannot be opened ({type(exc).__name__})", details={"path": str(archive)}
        ) from None
    if magic != ARCHIVE_MAGIC:
        raise RestoreRefused(
            f"{archive} is not a pg_dump custom-format archive (tenantflow backup writes one)",
            details={"path": str(archive)},
        )
    await find_tool("pg_restore", min_major=None, bin_dir=pg_bin)  # names what to install
    failures: list[str] = []
    for path in candidates("pg_restore", pg_bin):
        tool = await tool_version(path)
        if tool is None:
            continue
        code, out, err = await run_tool([tool.path, "--list", str(archive)])
        if code == 0:
            found = (_TOC_TABLE.match(line) for line in out.splitlines())
            return tool, {f"{m['schema']}.{m['name']}" for m in found if m}
        failures.append(f"{tool.path} ({tool.version}): {first_error_line(err)}")
    readable = [f for f in failures if not _too_new(f)]
    if failures and not readable:
        raise RestoreRefused(
            f"{archive} was written by a newer pg_dump than any pg_restore found: install that "
            "version's client tools or point --pg-bin at them",
            details={"path": str(archive), "pg_restore": failures},
        )
    reason = readable[0].split(": ", 1)[-1] if readable else "no pg_restore ran"
    raise RestoreRefused(
        f"{archive} cannot be read in full (truncated or corrupt?): {reason}",
        details={"path": str(archive), "pg_restore": failures},
    )


async def inspect_archive(
    pg_restore: PgTool, archive: Path, tables: set[str], cipher: CredentialCipher
) -> tuple[CatalogContents, list[str]]:
    """Read every row of the archive once: rows per table, the schema ledger, credentials per
    key id (each checked against the key ring); return the contents and the key ids proven by a
    decryption.

    Raises:
        RestoreRefused: Not a tenantflow catalog, an unknown schema version, an unknown key id,
            a key that does not decrypt, or a malformed credential.
    """
    contents = CatalogContents(tables=dict.fromkeys(sorted(tables), 0))
    schema: dict[int, str] = {}
    proven: dict[str, bool] = {}  # key id -> decrypted one of its credentials
    failures: list[str] = []
    try:
        async for table, columns, row in copy_blocks(pg_restore, archive):
            contents.tables[table] = contents.tables.get(table, 0) + 1
            name = short(table)
            values = dict(zip(columns, row, strict=False))
            if name == SCHEMA_TABLE:
                schema[int(values["version"] or 0)] = values.get("checksum") or ""
            for column, token in values.items():
                if not column.endswith("_encrypted") or token is None:
                    continue
                try:
                    key_id = cipher.key_id_of(token)
                except CredentialDecryptionError:
                    failures.append(f"a malformed credential in {name}.{column}")
                    continue
                contents.key_ids[key_id] = contents.key_ids.get(key_id, 0) + 1
                known = _CONTEXTS.get((name, column))
                if key_id not in cipher.key_ring or known is None or proven.get(key_id):
                    continue
                id_column, context = known
                try:
                    cipher.decrypt(token, context=context(values.get(id_column) or ""))
                    proven[key_id] = True
                except (CredentialDecryptionError, ValueError):
                    proven.setdefault(key_id, False)
    except PgToolFailed as exc:
        raise RestoreRefused(exc.message, details=exc.details) from None
    _check_schema(schema)
    configured = list(cipher.key_ring.key_ids)
    unknown = sorted(k for k in contents.key_ids if k not in cipher.key_ring)
    if unknown:
        failures.append(
            f"credentials under key id(s) {', '.join(map(repr, unknown))}, not among the "
            f"configured keys ({', '.join(map(repr, configured))}): add them to "
            "TENANTFLOW_CRYPTO__KEYS as they were when the backup was made"
        )
    wrong = sorted(k for k, ok in proven.items() if not ok)
    if wrong:
        failures.append(
            f"key id(s) {', '.join(map(repr, wrong))} are configured but do not decrypt the "
            "archive's credentials (other key material under the same id?)"
        )
    if failures:
        raise RestoreRefused(
            "the archive's credentials cannot be used with the configured keys: "
            + "; ".join(dict.fromkeys(failures)),
            details={"archive_key_ids": sorted(contents.key_ids), "configured_key_ids": configured},
        )
    contents.schema_version = max(schema)
    return contents, sorted(k for k, ok in proven.items() if ok)


def _check_schema(recorded: dict[int, str]) -> None:
    if not recorded:
        raise RestoreRefused(
            f"the archive holds no tenantflow catalog (no {SCHEMA_TABLE} rows)",
            details={"table": SCHEMA_TABLE},
        )
    shipped = {m.version: m.checksum for m in load_catalog_migrations()}
    newer = sorted(v for v in recorded if v not in shipped)
    changed = sorted(v for v, c in recorded.items() if v in shipped and shipped[v] != c)
    if newer or changed:
        raise RestoreRefused(
            "the archive's catalog schema does not match this tenantflow's: "
            + (
                f"versions {newer} are unknown (a newer tenantflow made it: upgrade first)"
                if newer
                else ""
            )
            + ("; " if newer and changed else "")
            + (f"versions {changed} have other checksums" if changed else ""),
            details={"unknown_versions": newer, "changed_versions": changed},
        )


async def _check_catalog(
    conn: asyncpg.Connection, archive_tables: set[str], force: bool
) -> CatalogContents:
    """The catalog's current contents, once it is safe to replace them."""
    sessions = await conn.fetch(
        "SELECT coalesce(nullif(application_name, ''), usename::text, '?') AS who, count(*) AS n "
        "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend' GROUP BY 1 ORDER BY 1"
    )
    if sessions:
        who = ", ".join(f"{r['n']} of {r['who']!r}" for r in sessions)
        raise RestoreRefused(
            f"other sessions are connected to the catalog ({who}): stop every worker and "
            "gateway (and other clients of this database) before restoring",
            details={"sessions": sum(int(r["n"]) for r in sessions)},
        )
    current = await read_contents(conn)
    extra = sorted(t for t in current.tables if t not in archive_tables)
    if extra:
        raise RestoreRefused(
            f"the catalog has tables the archive does not hold ({', '.join(extra)}; a newer "
            "tenantflow's schema?) and a restore would leave them behind: restore into an empty "
            "database (drop and create it) or drop them first",
            details={"tables": extra},
        )
    data = current.data_rows()
    if data and not force:
        listed = ", ".join(f"{short(t)} {n}" for t, n in data.items())
        raise RestoreRefused(
            f"the catalog is not empty ({listed} rows): pass --force to replace all of it with "
            "the archive's contents",
            details={"rows": data},
        )
    return current


async def restore_catalog(
    settings: Settings, archive: Path, *, force: bool = False, pg_bin: Path | None = None
) -> RestoreResult:
    """Check ``archive`` and the catalog, then replace the catalog's contents in one transaction.

    Raises:
        RestoreRefused: A check failed; the catalog is as it was.
        PgToolFailed: pg_restore failed; its single transaction was rolled back.
        PgToolMissing, DependencyUnavailable: No pg_restore; the catalog is unreachable.
    """
    cipher = CredentialCipher(KeyRing.from_settings(settings.crypto))
    pg_restore, tables = await _pick_pg_restore(archive, pg_bin)
    dumped, proven = await inspect_archive(pg_restore, archive, tables, cipher)
    target = split_password(settings.catalog.dsn.get_secret_value())
    conn = await connect_catalog(settings.catalog)
    try:
        current = await _check_catalog(conn, tables, force)
        await conn.close()  # its session would count against the restore's own checks
        code, _, stderr = await run_tool(
            [
                pg_restore.path,
                "--clean",
                "--if-exists",
                "--single-transaction",
                "--exit-on-error",
                "--no-owner",
                "--no-privileges",
                "--no-password",
                f"--dbname={target.conninfo}",
                str(archive),
            ],
            env=target.env(settings.catalog.connect_timeout_seconds),
        )
        if code != 0:
            output = target.scrub(stderr)
            raise PgToolFailed(
                f"pg_restore failed and its transaction was rolled back, the catalog is as it "
                f"was: {first_error_line(output)}",
                details={"tool": pg_restore.path, "output": output[-2000:]},
            )
        conn = await connect_catalog(settings.catalog)
        restored = await read_contents(conn)
        await _audit(conn, archive, current.data_rows())
    finally:
        await conn.close()
    return RestoreResult(
        path=str(archive),
        sha256=await asyncio.to_thread(sha256_of, archive),
        pg_restore=f"{pg_restore.path} {pg_restore.version}",
        replaced=current.data_rows(),
        contents=restored,
        verified=(restored.tables, restored.key_ids) == (dumped.tables, dumped.key_ids),
        shipped_schema_version=max(m.version for m in load_catalog_migrations()),
        decrypted_key_ids=proven,
    )


async def _audit(conn: asyncpg.Connection, archive: Path, replaced: dict[str, int]) -> None:
    details: dict[str, Any] = {"archive": archive.name, "replaced_rows": sum(replaced.values())}
    await conn.execute(
        "INSERT INTO audit_events (subject, action, resource, outcome, details) "
        "VALUES ($1, 'catalog.restore', 'catalog', 'success', $2::jsonb)",
        f"cli:{getpass.getuser()}",
        json.dumps(details),
    )


def restore(
    path: Annotated[Path, typer.Argument(help="An archive written by tenantflow backup.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace a catalog that holds data (listed first).")
    ] = False,
    pg_bin: PgBinOption = None,
    as_json: JsonOption = False,
) -> None:
    """Restore the catalog from a backup, all or nothing; stop workers and gateways first.

    Refuses an archive under keys not in TENANTFLOW_CRYPTO__KEYS, and a catalog with data
    unless --force."""
    from cli.main import fail, load_settings

    settings = load_settings()
    try:
        archive = path.expanduser().absolute()
        result = asyncio.run(restore_catalog(settings, archive, force=force, pg_bin=pg_bin))
    except TenantflowError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(asdict(result), indent=2))
        raise typer.Exit(0 if result.verified else 1)
    if result.replaced:
        listed = ", ".join(f"{short(t)} {n}" for t, n in result.replaced.items())
        typer.echo(f"replaced the catalog's previous contents ({listed} rows)")
    typer.echo(f"restored the catalog from {result.path} (sha256 {result.sha256})")
    typer.echo(
        f"  {result.pg_restore}; catalog schema version {result.contents.schema_version}"
        f" (this tenantflow ships {result.shipped_schema_version}; a worker or gateway "
        "applies newer versions when it starts)"
    )
    echo_contents(result.contents)
    typer.echo(f"  each key id decrypts: {', '.join(map(repr, result.decrypted_key_ids)) or '-'}")
    if result.verified:
        typer.echo("  verified: every table holds as many rows (and credentials) as the archive")
    else:
        typer.secho("  error: the catalog's counts differ from the archive's", fg="red", err=True)
        raise typer.Exit(1)
