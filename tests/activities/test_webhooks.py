"""Webhook delivery's pure parts (activities.webhooks): ``Retry-After`` in both of its forms,
connection errors that never carry the endpoint's URL, and publishing that needs a client."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from activities.webhooks import WebhookActivities, _describe, parse_retry_after
from common.catalog.webhooks import WebhookRepository
from common.crypto import CredentialCipher, KeyRing
from common.settings import Settings
from models.webhooks import EventOut, WebhookEventType

NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (" 120 ", 120.0),
        ("Thu, 03 Dec 2026 12:01:30 GMT", 90.0),
        # An HTTP date without a zone (-0000) is read as UTC.
        ("Thu, 03 Dec 2026 12:00:45 -0000", 45.0),
        ("Thu, 03 Dec 2026 11:00:00 GMT", 0.0),  # in the past: at once
        ("soon", None),
    ],
)
def test_retry_after_is_seconds_or_an_http_date(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


def test_a_connection_error_naming_the_url_or_its_secrets_is_reduced_to_its_class() -> None:
    url = "https://hooks.example.com/in?token=s3cr3t"
    assert _describe(httpx.ConnectError(f"cannot reach {url}"), url) == "ConnectError"
    assert _describe(httpx.ReadTimeout("token=s3cr3t rejected"), url) == "ReadTimeout"
    assert _describe(httpx.ConnectError(""), url) == "ConnectError"
    assert _describe(httpx.ConnectError("connection refused"), url) == (
        "ConnectError: connection refused"
    )


async def test_publishing_without_a_temporal_client_is_refused(
    catalog_pool: asyncpg.Pool, settings: Settings
) -> None:
    repository = WebhookRepository(
        catalog_pool, CredentialCipher(KeyRing.from_settings(settings.crypto))
    )
    event = EventOut(
        id="run-1234-completed",
        type=next(iter(WebhookEventType)),
        subject="migrate-fleet-1234",
        time=NOW,
    )
    with pytest.raises(RuntimeError, match="needs a Temporal client"):
        await WebhookActivities(repository).publish_event(event)
