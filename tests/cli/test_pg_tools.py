"""Finding pg_dump/pg_restore and keeping the catalog's password off their command lines."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from cli import pg_tools
from cli.pg_tools import (
    PgTool,
    PgToolFailed,
    PgToolMissing,
    candidates,
    copy_blocks,
    copy_field,
    find_tool,
    first_error_line,
    run_tool,
    split_password,
    tool_version,
    wheel_bin_dir,
)


@pytest.mark.parametrize(
    ("dsn", "conninfo", "password"),
    [
        (
            "postgresql://app:s%40cret@db.example:5432/tenantflow?sslmode=require",
            "postgresql://app@db.example:5432/tenantflow?sslmode=require",
            "s@cret",
        ),
        (
            "postgres://app@h1:5432,h2:5433/cat?password=p%26w&application_name=x",
            "postgres://app@h1:5432,h2:5433/cat?application_name=x",
            "p&w",
        ),
        ("postgresql://app@db/cat", "postgresql://app@db/cat", None),
        (
            "host=db user=app password='two \\'words' dbname=cat",
            "host=db user=app dbname=cat",
            "two 'words",
        ),
        ("host=db password=plain dbname=cat", "host=db dbname=cat", "plain"),
    ],
)
def test_the_password_is_split_from_the_dsn(dsn: str, conninfo: str, password: str | None) -> None:
    target = split_password(dsn)
    assert (target.conninfo, target.password) == (conninfo, password)
    if password:
        env = target.env(5)
        assert env["PGPASSWORD"] == password
        assert password not in target.scrub(f"error near {password} in {dsn}")


def test_copy_text_fields_are_decoded() -> None:
    assert copy_field("\\N") is None
    assert copy_field("tf1:dev:abc-_") == "tf1:dev:abc-_"
    assert copy_field("a\\tb\\nc\\\\d\\x41\\101") == "a\tb\nc\\dAA"


def _fake_tool(directory: Path, name: str, version: str) -> None:
    script = directory / name
    script.write_text(f"#!/bin/sh\necho '{name} (PostgreSQL) {version}'\n")
    script.chmod(0o755)


async def test_path_comes_first_but_an_old_tool_is_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = wheel_bin_dir()
    assert wheel is not None and (wheel / "pg_dump").exists()
    _fake_tool(tmp_path, "pg_dump", "12.3")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert (await find_tool("pg_dump", min_major=None)).path == str(tmp_path / "pg_dump")
    chosen = await find_tool("pg_dump", min_major=18)
    assert chosen.path == str(wheel / "pg_dump") and chosen.major >= 18


async def test_too_old_tools_name_what_to_install(tmp_path: Path) -> None:
    _fake_tool(tmp_path, "pg_dump", "15.2 (Debian 15.2-1)")
    with pytest.raises(PgToolMissing) as caught:
        await find_tool("pg_dump", min_major=18, bin_dir=tmp_path)
    message = caught.value.message
    assert "pg_dump 18 or newer is needed" in message
    assert f"{tmp_path / 'pg_dump'} (15.2 (Debian 15.2-1))" in message
    assert "apt-get install postgresql-client-18" in message
    assert "pip install 'tenantflow[embedded]'" in message


def test_without_a_password_nothing_is_added_or_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    target = split_password("host=db user=app dbname=cat")
    assert (target.conninfo, target.password) == ("host=db user=app dbname=cat", None)
    env = target.env(0.5)
    assert "PGPASSWORD" not in env
    assert env["PGCONNECT_TIMEOUT"] == "2"  # libpq's minimum that is not "wait forever"
    # A DSN in the output is still redacted, the rest is kept line by line.
    assert target.scrub("could not connect\npostgresql://u:pw@h/db") == (
        "could not connect\npostgresql://u:***@h/db"
    )


def test_without_the_wheel_only_path_is_searched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only cli.pg_tools's view of importlib: the wheel is not found.
    no_wheel = SimpleNamespace(util=SimpleNamespace(find_spec=lambda _name: None))
    monkeypatch.setattr(pg_tools, "importlib", no_wheel)
    assert wheel_bin_dir() is None
    monkeypatch.setenv("PATH", str(tmp_path))
    assert candidates("pg_dump") == []
    _fake_tool(tmp_path, "pg_dump", "17.1")
    assert candidates("pg_dump") == [str(tmp_path / "pg_dump")]


def test_a_tool_on_path_and_in_the_wheel_is_listed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = wheel_bin_dir()
    assert wheel is not None
    (tmp_path / "pg_restore").symlink_to(wheel / "pg_restore")
    monkeypatch.setenv("PATH", str(tmp_path))
    # Run by the name found on PATH (Debian's pg_wrapper picks the tool by that name).
    assert candidates("pg_restore") == [str(tmp_path / "pg_restore")]
    assert candidates("pg_restore", bin_dir=tmp_path / "nowhere") == []


async def test_tools_that_do_not_run_or_say_no_version_are_skipped(tmp_path: Path) -> None:
    assert await tool_version(str(tmp_path / "missing")) is None  # OSError: no such file
    silent = tmp_path / "pg_dump"
    silent.write_text("#!/bin/sh\necho 'some other program'\n")
    silent.chmod(0o755)
    assert await tool_version(str(silent)) is None
    failing = tmp_path / "failing"
    failing.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 18.1'\nexit 1\n")
    failing.chmod(0o755)
    assert await tool_version(str(failing)) is None
    with pytest.raises(PgToolMissing) as caught:
        await find_tool("pg_dump", min_major=None, bin_dir=tmp_path)
    assert caught.value.message.startswith(f"pg_dump was not found {tmp_path}: ")
    assert "apt-get install postgresql-client)" in caught.value.message


async def test_a_tool_over_its_time_limit_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = tmp_path / "slow"
    script.write_text(
        f"#!/bin/sh\necho $$ > {pid_file}\nexec {sys.executable} -c 'import time; time.sleep(30)'\n"
    )
    script.chmod(0o755)
    with pytest.raises(TimeoutError):
        await run_tool([str(script)], limit_seconds=1)
    pid = int(pid_file.read_text())
    assert not _alive(pid)  # killed and reaped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_first_error_line_is_picked() -> None:
    assert first_error_line("") == "no output"
    assert first_error_line("\n  \n") == "no output"
    assert first_error_line("notice: x\n  pg_dump: error: boom\nFATAL: later") == (
        "pg_dump: error: boom"
    )
    assert first_error_line("  just words\nmore words") == "just words"


def _fake_restore(directory: Path, stdout: str, code: int = 0, stderr: str = "") -> PgTool:
    """A ``pg_restore`` that prints ``stdout`` (what ``--data-only --file=-`` would) and exits."""
    data = directory / "out.txt"
    data.write_text(stdout)
    script = directory / "pg_restore"
    script.write_text(f"#!/bin/sh\ncat {data}\necho '{stderr}' >&2\nexit {code}\n")
    script.chmod(0o755)
    return PgTool(str(script), "18.0", 18)


COPY_TEXT = (
    "SET statement_timeout = 0;\n"
    'COPY public.databases (id, name, "labels") FROM stdin;\n'
    "d1\tone\t{}\n"
    'd2\t\\N\t{"a":"b\\tc"}\n'
    "\\.\n"
    "COPY public.servers (id) FROM stdin;\n"
    "s1\n"
    "\\.\n"
)


async def test_copy_blocks_stream_every_row(tmp_path: Path) -> None:
    tool = _fake_restore(tmp_path, COPY_TEXT)
    rows = [row async for row in copy_blocks(tool, tmp_path / "a.dump")]
    assert rows == [
        ("public.databases", ["id", "name", "labels"], ["d1", "one", "{}"]),
        ("public.databases", ["id", "name", "labels"], ["d2", None, '{"a":"b\tc"}']),
        ("public.servers", ["id"], ["s1"]),
    ]


async def test_copy_blocks_of_a_broken_archive_raise_after_the_rows_read(tmp_path: Path) -> None:
    tool = _fake_restore(
        tmp_path,
        COPY_TEXT,
        code=1,
        stderr="pg_restore: error: could not read input file: end of file",
    )
    archive = tmp_path / "broken.dump"
    seen: list[str | None] = []
    with pytest.raises(PgToolFailed) as caught:
        async for _, _, row in copy_blocks(tool, archive):
            seen.append(row[0])
    assert seen == ["d1", "d2", "s1"]
    assert caught.value.message == (
        f"{archive} cannot be read in full (truncated or corrupt?): "
        "pg_restore: error: could not read input file: end of file"
    )
    assert caught.value.details["archive"] == str(archive)


async def test_stopping_early_kills_pg_restore(tmp_path: Path) -> None:
    script = tmp_path / "pg_restore"
    pid_file = tmp_path / "pid"
    script.write_text(
        "#!/bin/sh\n"
        f"echo $$ > {pid_file}\n"
        "echo 'COPY public.t (id) FROM stdin;'\n"
        "i=0; while true; do echo $i; i=$((i+1)); done\n"
    )
    script.chmod(0o755)
    tool = PgTool(str(script), "18.0", 18)
    rows = copy_blocks(tool, tmp_path / "endless.dump")
    first = await anext(rows)
    assert first == ("public.t", ["id"], ["0"])
    pid = int(pid_file.read_text())
    assert _alive(pid)
    # The reader stops early: the endless tool is killed, and that is no error of the archive.
    await rows.aclose()
    assert not _alive(pid)
