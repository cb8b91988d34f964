"""``tenantflow restore``'s checks of an archive before the catalog is touched.

The archive's rows come from a stand-in ``pg_restore`` (a script printing what ``pg_restore
--data-only --file=-`` prints) so each refusal gets exactly the rows it is about; the real round
trip, with the real tools and catalog, is in tests/cli/test_backup.py (and the ``--json`` run
below)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from cli.pg_tools import PgTool
from cli.restore import RestoreRefused, _pick_pg_restore, inspect_archive
from common.catalog import databases, load_catalog_migrations
from common.crypto import CredentialCipher, KeyRing
from common.settings import CryptoSettings
from tests.cli.test_backup import OwnCatalog, own
from tests.conftest import TargetFactory

__all__ = ["own"]  # the fixture: a catalog database of the test's own

TABLES = {"public.tenantflow_catalog_schema", "public.databases"}


@pytest.fixture
def cipher() -> CredentialCipher:
    return CredentialCipher(KeyRing.from_settings(CryptoSettings()))


def _schema_rows() -> str:
    rows = "".join(f"{m.version}\t{m.checksum}\n" for m in load_catalog_migrations())
    header = "COPY public.tenantflow_catalog_schema (version, checksum) FROM stdin;\n"
    return f"{header}{rows}\\.\n"


def _stand_in(directory: Path, stdout: str, code: int = 0, stderr: str = "") -> PgTool:
    data = directory / "rows.txt"
    data.write_text(stdout)
    script = directory / "pg_restore"
    script.write_text(f"#!/bin/sh\ncat {data}\nprintf '%s\\n' '{stderr}' >&2\nexit {code}\n")
    script.chmod(0o755)
    return PgTool(str(script), "18.0", 18)


def _databases(*rows: tuple[str, str]) -> str:
    body = "".join(f"{i}\t{token}\n" for i, token in rows)
    return f"COPY public.databases (id, password_encrypted) FROM stdin;\n{body}\\.\n"


async def test_a_catalog_archive_is_counted_and_its_key_proven(
    tmp_path: Path, cipher: CredentialCipher
) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    tokens = [
        cipher.encrypt("pw-1", context=databases.password_context(uuid.UUID(first))),
        cipher.encrypt("pw-2", context=databases.password_context(uuid.UUID(second))),
    ]
    rows = _schema_rows() + _databases((first, tokens[0]), (second, tokens[1]))
    contents, proven = await inspect_archive(
        _stand_in(tmp_path, rows), tmp_path / "a.dump", TABLES, cipher
    )
    assert proven == ["dev"]
    assert contents.key_ids == {"dev": 2}
    assert contents.tables["public.databases"] == 2
    assert contents.schema_version == max(m.version for m in load_catalog_migrations())


async def test_a_malformed_credential_is_refused(tmp_path: Path, cipher: CredentialCipher) -> None:
    rows = _schema_rows() + _databases((str(uuid.uuid4()), "not-a-token"))
    with pytest.raises(RestoreRefused) as caught:
        await inspect_archive(_stand_in(tmp_path, rows), tmp_path / "a.dump", TABLES, cipher)
    assert caught.value.message == (
        "the archive's credentials cannot be used with the configured keys: "
        "a malformed credential in databases.password_encrypted"
    )
    assert caught.value.details == {"archive_key_ids": [], "configured_key_ids": ["dev"]}


async def test_an_archive_without_a_catalog_schema_is_refused(
    tmp_path: Path, cipher: CredentialCipher
) -> None:
    rows = _databases((str(uuid.uuid4()), "x"))
    with pytest.raises(RestoreRefused) as caught:
        await inspect_archive(_stand_in(tmp_path, rows), tmp_path / "a.dump", TABLES, cipher)
    assert caught.value.message == (
        "the archive holds no tenantflow catalog (no tenantflow_catalog_schema rows)"
    )


async def test_an_archive_of_another_schema_names_the_versions(
    tmp_path: Path, cipher: CredentialCipher
) -> None:
    shipped = load_catalog_migrations()
    newest = max(m.version for m in shipped)
    rows = (
        "COPY public.tenantflow_catalog_schema (version, checksum) FROM stdin;\n"
        + "".join(f"{m.version}\t{'0' * 64 if m.version == 1 else m.checksum}\n" for m in shipped)
        + f"{newest + 1}\tabc\n\\.\n"
    )
    with pytest.raises(RestoreRefused) as caught:
        await inspect_archive(_stand_in(tmp_path, rows), tmp_path / "a.dump", TABLES, cipher)
    assert caught.value.message == (
        "the archive's catalog schema does not match this tenantflow's: "
        f"versions [{newest + 1}] are unknown (a newer tenantflow made it: upgrade first); "
        "versions [1] have other checksums"
    )
    assert caught.value.details == {"unknown_versions": [newest + 1], "changed_versions": [1]}


async def test_an_archive_pg_restore_cannot_finish_is_refused(
    tmp_path: Path, cipher: CredentialCipher
) -> None:
    tool = _stand_in(
        tmp_path, _schema_rows(), code=1, stderr="pg_restore: error: unexpected end of file"
    )
    archive = tmp_path / "cut.dump"
    with pytest.raises(RestoreRefused) as caught:
        await inspect_archive(tool, archive, TABLES, cipher)
    assert caught.value.message == (
        f"{archive} cannot be read in full (truncated or corrupt?): "
        "pg_restore: error: unexpected end of file"
    )
    assert caught.value.status_code == 409


async def test_a_broken_pg_restore_on_path_is_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "bin" / "pg_restore"
    broken.parent.mkdir()
    broken.write_text("#!/bin/sh\necho 'no version here'\n")
    broken.chmod(0o755)
    monkeypatch.setenv("PATH", str(broken.parent))
    archive = tmp_path / "cut.dump"
    archive.write_bytes(b"PGDMP\x01\x10\x00\x04\x08\x01\x01")  # a header, then nothing
    with pytest.raises(RestoreRefused) as caught:
        await _pick_pg_restore(archive, None)
    # Only the wheel's pg_restore ran: the broken one says no version and is skipped.
    assert caught.value.message == (
        f"{archive} cannot be read in full (truncated or corrupt?): "
        "pg_restore: error: could not read from input file: end of file"
    )
    failures = caught.value.details["pg_restore"]
    assert len(failures) == 1 and str(broken) not in failures[0]


async def test_a_damaged_header_is_not_taken_for_a_newer_pg_dump(tmp_path: Path) -> None:
    archive = tmp_path / "zeros.dump"
    archive.write_bytes(b"PGDMP" + b"\x00" * 64)  # format version 0.0: no format at all
    with pytest.raises(RestoreRefused) as caught:
        await _pick_pg_restore(archive, None)
    assert caught.value.message == (
        f"{archive} cannot be read in full (truncated or corrupt?): "
        "pg_restore: error: unsupported version (0.0) in file header"
    )
    assert "newer pg_dump" not in caught.value.message


async def test_restore_json_reports_the_verified_restore(
    own: OwnCatalog, make_target: TargetFactory, tmp_path: Path
) -> None:
    await own.register(await make_target(), server=True)
    archive = tmp_path / "catalog.dump"
    assert (await own.cli("backup", str(archive))).returncode == 0
    await own.wipe()
    restored = await own.cli("restore", str(archive), "--json")
    assert restored.returncode == 0, restored.stderr
    report = json.loads(restored.stdout)
    assert report["verified"] is True
    assert report["path"] == str(archive)
    assert report["replaced"] == {}  # the catalog was empty
    assert report["decrypted_key_ids"] == ["dev"]
    assert report["contents"]["key_ids"] == {"dev": 2}
    assert report["contents"]["tables"]["public.databases"] == 1
    assert report["shipped_schema_version"] == report["contents"]["schema_version"]
