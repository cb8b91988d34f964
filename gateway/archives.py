"""Reading an uploaded `.tar.gz`/`.tgz` or `.zip` of migration files, every member bounded.

Extraction is CPU-bound and synchronous: callers run it in a worker thread
(``asyncio.to_thread``) so a large or hostile archive never stalls the event loop.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from typing import IO

from common.errors import InvalidInput, PayloadTooLarge

MAX_ARCHIVE_BYTES = 20 * 1024 * 1024
MAX_EXTRACTED_BYTES = 100 * 1024 * 1024
MAX_MEMBER_BYTES = 10 * 1024 * 1024
# Every member counts, directories and links included: they cost time to walk as well.
MAX_MEMBERS = 10_000
# What a migration set is made of: scripts, and Flyway's script configuration files.
MIGRATION_FILES = (".sql", ".sql.conf")
_READ_CHUNK = 64 * 1024


class _Budget:
    """Counts members and bytes; raises as soon as one limit is crossed."""

    def __init__(self) -> None:
        self.members = 0
        self.total = 0

    def member(self) -> None:
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise PayloadTooLarge(
                f"the archive has more than {MAX_MEMBERS} members (directories included)",
                details={"max_members": MAX_MEMBERS},
            )

    def skip(self, declared: int) -> None:
        # Skipping a member of a compressed tar still decompresses it: it counts toward the total.
        self.total += declared
        self._check_total()

    def _check_total(self) -> None:
        if self.total > MAX_EXTRACTED_BYTES:
            raise PayloadTooLarge(
                f"the archive expands beyond {MAX_EXTRACTED_BYTES} bytes",
                details={"max_extracted_bytes": MAX_EXTRACTED_BYTES},
            )

    def read(self, name: str, stream: IO[bytes], declared: int) -> bytes:
        if declared > MAX_MEMBER_BYTES:
            raise _member_too_large(name)
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = stream.read(_READ_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            self.total += len(chunk)
            if size > MAX_MEMBER_BYTES:
                raise _member_too_large(name)
            self._check_total()
            chunks.append(chunk)
        return b"".join(chunks)


def _member_too_large(name: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{name} expands beyond {MAX_MEMBER_BYTES} bytes",
        details={"file": name, "max_member_bytes": MAX_MEMBER_BYTES},
    )


def _zip_members(data: bytes, budget: _Budget) -> Iterator[tuple[str, bytes]]:
    try:
        bundle = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise InvalidInput(f"the zip archive cannot be read: {exc}") from None
    with bundle:
        for info in bundle.infolist():
            budget.member()
            if info.is_dir() or not info.filename.endswith(MIGRATION_FILES):
                continue
            if info.flag_bits & 0x1:
                raise InvalidInput(
                    f"{info.filename} is encrypted; upload an archive without a password",
                    details={"file": info.filename},
                )
            try:
                with bundle.open(info) as stream:
                    yield info.filename, budget.read(info.filename, stream, info.file_size)
            except NotImplementedError as exc:  # a RuntimeError too: caught first
                raise InvalidInput(
                    f"{info.filename} uses an unsupported compression: {exc}",
                    details={"file": info.filename},
                ) from None
            except (
                zipfile.BadZipFile,
                zlib.error,
                EOFError,
                OSError,
                RuntimeError,
                ValueError,  # a member offset before the archive's start: "negative seek"
            ) as exc:
                raise InvalidInput(
                    f"{info.filename} cannot be extracted: {exc}",
                    details={"file": info.filename},
                ) from None


def _tar_members(data: bytes, budget: _Budget) -> Iterator[tuple[str, bytes]]:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar:
                budget.member()
                if not member.isfile():
                    continue
                if not member.name.endswith(MIGRATION_FILES):
                    budget.skip(member.size)
                    continue
                extracted = tar.extractfile(member)
                if extracted is not None:
                    yield member.name, budget.read(member.name, extracted, member.size)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise InvalidInput(
            f"the upload is neither a zip nor a readable (gzipped) tar archive: {exc}"
        ) from None


def extract_sql_files(data: bytes) -> dict[str, str]:
    """The ``.sql`` (and ``.sql.conf``) members of a tar.gz or zip archive, by base name.

    Raises ``InvalidInput`` (400) for an unreadable, truncated, corrupt or encrypted archive, a
    non-UTF-8 file or one file name in two folders; ``PayloadTooLarge`` (413) over a limit.
    """
    budget = _Budget()
    members = _zip_members if zipfile.is_zipfile(io.BytesIO(data)) else _tar_members
    files: dict[str, str] = {}
    paths: dict[str, str] = {}
    for path, content in members(data, budget):
        base = path.rsplit("/", 1)[-1]
        if base in paths:
            raise InvalidInput(
                f"{paths[base]} and {path} have the same file name; a set is one folder",
                details={"file": base, "paths": [paths[base], path]},
            )
        try:
            files[base] = content.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"{path} is not UTF-8 text", details={"file": path}) from None
        paths[base] = path
    return files
