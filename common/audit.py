"""The audit trail: who did what, to which resource, with what outcome, under which request id."""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

import asyncpg

from common.logging import redact_value

log = logging.getLogger("tenantflow.audit")

Outcome = Literal["success", "denied", "failure"]


def outcome_for_status(status: int) -> Outcome:
    """``success`` below 400, ``denied`` for 401/403/429, ``failure`` otherwise."""
    if status < 400:
        return "success"
    if status in (401, 403, 429):
        return "denied"
    return "failure"


async def record_audit(
    pool: asyncpg.Pool,
    *,
    subject: str,
    action: str,
    resource: str,
    outcome: Outcome,
    request_id: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    """Insert one audit event; secrets in ``details`` are redacted before they are stored."""
    safe = {k: redact_value(k, v) for k, v in (details or {}).items()}
    await pool.execute(
        "INSERT INTO audit_events (subject, action, resource, outcome, request_id, details) "
        "VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
        subject,
        action,
        resource,
        outcome,
        request_id,
        json.dumps(safe, default=str),
    )
