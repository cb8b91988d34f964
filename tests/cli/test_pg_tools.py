"""Finding pg_dump/pg_restore and keeping the catalog's password off their command lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.pg_tools import PgToolMissing, copy_field, find_tool, split_password, wheel_bin_dir


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
