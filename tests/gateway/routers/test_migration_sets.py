"""Archive uploads through HTTP: every member bounded, extraction off the event loop, 400s."""

from __future__ import annotations

import io
import tarfile
import threading
import uuid
import zipfile

import httpx
import pytest

from gateway import archives
from tests.conftest import Tokens

ARCHIVE = "/api/v1/migration-sets/archive"
UP = b"CREATE TABLE t (id int);"


def _name() -> str:
    return f"arch-{uuid.uuid4().hex[:6]}"


async def _upload(
    api: httpx.AsyncClient, tokens: Tokens, data: bytes, file_name: str = "set.tgz"
) -> httpx.Response:
    return await api.post(
        ARCHIVE,
        data={"name": _name()},
        files={"archive": (file_name, data, "application/octet-stream")},
        headers=tokens.headers("infra-operator"),
    )


def _tgz(members: dict[str, bytes], directories: int = 0) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for index in range(directories):
            info = tarfile.TarInfo(f"d{index}")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def _assert_400(response: httpx.Response, *needles: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"type", "message", "details"}
    for needle in needles:
        assert needle in error["message"], error


async def test_directory_entries_count_toward_the_member_limit(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    response = await _upload(api, tokens, _tgz({"V1__a.sql": UP}, directories=50_000))
    assert response.status_code == 413, response.text
    assert response.json()["error"]["details"]["max_members"] == archives.MAX_MEMBERS


async def test_truncated_tgz_is_400(api: httpx.AsyncClient, tokens: Tokens) -> None:
    whole = _tgz({f"V{i}__a.sql": UP * 200 for i in range(1, 20)})
    _assert_400(await _upload(api, tokens, whole[: len(whole) // 2]), "archive")


async def test_bad_crc_zip_is_400(api: httpx.AsyncClient, tokens: Tokens) -> None:
    data = bytearray(_zip({"V1__a.sql": UP}))
    # The CRC-32 of the first local header sits at offset 14; the central directory keeps its own.
    data[14] ^= 0xFF
    central = data.rfind(b"PK\x01\x02")
    data[central + 16] ^= 0xFF
    _assert_400(await _upload(api, tokens, bytes(data), "set.zip"), "V1__a.sql")


async def test_encrypted_zip_is_400(api: httpx.AsyncClient, tokens: Tokens) -> None:
    data = bytearray(_zip({"V1__a.sql": UP}))
    data[6] |= 0x01  # general-purpose flag bit 0: encrypted (local header)
    central = data.rfind(b"PK\x01\x02")
    data[central + 8] |= 0x01  # and in the central directory
    _assert_400(await _upload(api, tokens, bytes(data), "set.zip"), "encrypted", "V1__a.sql")


async def test_same_file_name_in_two_folders_is_400_naming_both(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    data = _tgz({"a/V1__a.sql": UP, "b/V1__a.sql": UP})
    _assert_400(await _upload(api, tokens, data), "a/V1__a.sql", "b/V1__a.sql")


async def test_member_and_total_size_limits(
    api: httpx.AsyncClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archives, "MAX_MEMBER_BYTES", 100)
    big = await _upload(api, tokens, _tgz({"V1__a.sql": b"-- x\n" * 50}))
    assert big.status_code == 413, big.text
    assert "V1__a.sql" in big.json()["error"]["message"]
    monkeypatch.setattr(archives, "MAX_MEMBER_BYTES", 1000)
    monkeypatch.setattr(archives, "MAX_EXTRACTED_BYTES", 150)
    total = await _upload(api, tokens, _zip({f"V{i}__a.sql": b"-- x\n" * 10 for i in (1, 2, 3, 4)}))
    assert total.status_code == 413, total.text
    # Members that are not SQL still expand when a compressed tar is walked past them.
    skipped = await _upload(api, tokens, _tgz({"V1__a.sql": UP, "blob.bin": b"\0" * 200}))
    assert skipped.status_code == 413, skipped.text
    assert skipped.json()["error"]["details"]["max_extracted_bytes"] == 150


async def test_extraction_runs_in_a_worker_thread(
    api: httpx.AsyncClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[threading.Thread] = []
    original = archives.extract_sql_files

    def spy(data: bytes) -> dict[str, str]:
        seen.append(threading.current_thread())
        return original(data)

    monkeypatch.setattr(archives, "extract_sql_files", spy)
    response = await _upload(api, tokens, _tgz({"V1__a.sql": UP}))
    assert response.status_code == 201, response.text
    assert seen and seen[0] is not threading.main_thread()


async def test_an_archive_over_the_upload_limit_is_413_before_it_is_opened(
    api: httpx.AsyncClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _tgz({"V1__a.sql": UP})
    monkeypatch.setattr(archives, "MAX_ARCHIVE_BYTES", len(data) - 1)
    response = await _upload(api, tokens, data)
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["type"] == "payload_too_large"
    assert error["message"] == f"archives are limited to {len(data) - 1} bytes"
    monkeypatch.setattr(archives, "MAX_ARCHIVE_BYTES", len(data))
    assert (await _upload(api, tokens, data)).status_code == 201


async def test_a_zip_whose_directory_points_before_its_start_is_400_not_500(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    data = _zip({"V1__a.sql": UP})
    end = data.rindex(b"PK\x05\x06")
    moved = data[: end + 16] + (1_000_000).to_bytes(4, "little") + data[end + 20 :]
    _assert_400(await _upload(api, tokens, moved, "set.zip"), "V1__a.sql cannot be extracted")


async def test_reading_one_version(api: httpx.AsyncClient, tokens: Tokens) -> None:
    name = _name()
    operator = tokens.headers("infra-operator")
    registered = await api.post(
        "/api/v1/migration-sets",
        json={"name": name, "files": {"V1__a.sql": UP.decode(), "U1__a.sql": "DROP TABLE t;"}},
        headers=operator,
    )
    assert registered.status_code == 201, registered.text
    base = f"/api/v1/migration-sets/{name}/versions"
    found = await api.get(f"{base}/01", headers=tokens.headers("infra-viewer"))
    assert found.status_code == 200, found.text
    assert (found.json()["version"], found.json()["down_sql"]) == ("1", "DROP TABLE t;")
    missing = await api.get(f"{base}/2", headers=tokens.headers("infra-viewer"))
    assert missing.status_code == 404, missing.text
    assert missing.json()["error"] == {
        "type": "not_found",
        "message": f"set {name!r} has no version 2",
        "details": {"set": name},
    }
    bad = await api.get(f"{base}/not-a-version", headers=tokens.headers("infra-viewer"))
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_input"
