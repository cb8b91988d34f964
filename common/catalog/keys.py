"""Re-encrypting a catalog column under the active key (``tenantflow keys rotate``): one loop
for every table that stores a secret (targets, servers, webhook endpoints)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import asyncpg

from common.crypto import CredentialCipher


async def rotate_column(
    pool: asyncpg.Pool,
    cipher: CredentialCipher,
    *,
    table: str,
    column: str,
    key_column: str,
    context: Callable[[uuid.UUID], str],
    batch_size: int = 500,
) -> int:
    """Re-encrypt every ``column`` of ``table`` not under the active key, a batch per
    transaction (rows locked, others skipped, so two rotations can run at once); return how
    many changed. ``table`` and the columns are the caller's constants, never input."""
    active = cipher.key_ring.active_key_id
    select = (
        f"SELECT id, {column} FROM {table} WHERE {key_column} <> $1 "  # noqa: S608 - constants
        "ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED"
    )
    update = (
        f"UPDATE {table} SET {column} = $2, {key_column} = $3, "  # noqa: S608 - constants
        "updated_at = now() WHERE id = $1"
    )
    changed = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(select, active, batch_size)
            if not rows:
                return changed
            for row in rows:
                rotated = cipher.rotate(row[column], context=context(row["id"]))
                await conn.execute(update, row["id"], rotated, active)
            changed += len(rows)
