"""``tenantflow keys rotate``: re-encrypt stored credentials under the active key."""

from __future__ import annotations

from common.catalog import open_catalog
from common.catalog.databases import DatabaseRepository
from common.catalog.servers import ServerRepository
from common.catalog.webhooks import WebhookRepository
from common.crypto import CredentialCipher, KeyRing
from common.settings import Settings


async def rotate_credentials(settings: Settings) -> int:
    """Re-encrypt every target password, server admin password and webhook signing secret not
    under the active key; return how many changed."""
    pool = await open_catalog(settings.catalog)
    try:
        cipher = CredentialCipher(KeyRing.from_settings(settings.crypto))
        changed = await DatabaseRepository(pool, cipher).rotate_keys()
        changed += await ServerRepository(pool, cipher).rotate_keys()
        return changed + await WebhookRepository(pool, cipher).rotate_keys()
    finally:
        await pool.close()
