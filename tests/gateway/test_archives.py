"""Uploaded migration archives (``gateway.archives.extract_sql_files``): what is read from a
zip or tar.gz, and the 400s for archives that cannot be read."""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile

import pytest

from common.errors import InvalidInput
from gateway.archives import extract_sql_files


def _zip(files: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as bundle:
        for name, content in files.items():
            bundle.writestr(name, content)
    return buffer.getvalue()


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@pytest.mark.parametrize("pack", [_zip, _tar], ids=["zip", "tar.gz"])
def test_sql_files_are_read_by_base_name_and_others_left_out(pack: object) -> None:
    data = pack({"set/V1__a.sql": b"SELECT 1;", "set/README.md": b"hi"})  # type: ignore[operator]
    assert extract_sql_files(data) == {"V1__a.sql": "SELECT 1;"}


@pytest.mark.parametrize("pack", [_zip, _tar], ids=["zip", "tar.gz"])
def test_a_file_that_is_not_utf8_is_refused_naming_it(pack: object) -> None:
    data = pack({"set/V1__a.sql": b"SELECT '\xff';"})  # type: ignore[operator]
    with pytest.raises(InvalidInput) as caught:
        extract_sql_files(data)
    assert caught.value.message == "set/V1__a.sql is not UTF-8 text"
    assert caught.value.details == {"file": "set/V1__a.sql"}


def _end_record(data: bytes, offset: int, value: bytes) -> bytes:
    """``data`` with bytes of its end-of-central-directory record replaced at ``offset``."""
    end = data.rindex(b"PK\x05\x06")
    return data[: end + offset] + value + data[end + offset + len(value) :]


def test_a_zip_whose_directory_cannot_be_read_is_refused() -> None:
    data = _zip({"V1__a.sql": b"SELECT 1;"})
    truncated = _end_record(data, 12, struct.pack("<I", 5))  # directory size: 5 bytes
    assert zipfile.is_zipfile(io.BytesIO(truncated))
    with pytest.raises(InvalidInput, match="the zip archive cannot be read: Truncated"):
        extract_sql_files(truncated)


@pytest.mark.parametrize(
    "offset",
    [3, 1_000_000],
    ids=["into-another-header", "before-the-archive-start"],
)
def test_a_zip_whose_directory_points_elsewhere_is_refused_naming_the_file(offset: int) -> None:
    data = _zip({"V1__a.sql": b"SELECT 1;"})
    moved = _end_record(data, 16, struct.pack("<I", offset))
    with pytest.raises(InvalidInput) as caught:
        extract_sql_files(moved)
    assert caught.value.message.startswith("V1__a.sql cannot be extracted: ")
    assert caught.value.details == {"file": "V1__a.sql"}


def test_a_zip_member_in_an_unsupported_compression_is_refused_naming_it() -> None:
    data = bytearray(_zip({"V1__a.sql": b"SELECT 1;"}, zipfile.ZIP_DEFLATED))
    # Method 98 (PPMd) in the local header and the central directory entry.
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = data.index(signature) + offset
        data[at : at + 2] = struct.pack("<H", 98)
    with pytest.raises(InvalidInput) as caught:
        extract_sql_files(bytes(data))
    assert caught.value.message.startswith("V1__a.sql uses an unsupported compression")
    assert caught.value.details == {"file": "V1__a.sql"}
