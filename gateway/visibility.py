"""One page of a Temporal visibility query behind an opaque ``next_page`` cursor: the run,
event and webhook-delivery listings all page this way."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from temporalio.client import Client, WorkflowExecution
from temporalio.service import RPCError, RPCStatusCode

from common.errors import DependencyUnavailable, InvalidInput
from gateway.deps import temporal_unreachable


async def visibility_page(
    temporal: Client, query: str, *, page_size: int, next_page: str | None
) -> tuple[Sequence[WorkflowExecution], str | None]:
    """The executions of one page and the cursor of the next (None at the end). A cursor that
    is not ours, or that Temporal cannot read, is 400; Temporal not answering is 503."""
    try:
        token = (
            base64.b64decode(next_page.encode(), altchars=b"-_", validate=True)
            if next_page
            else None
        )
    except (ValueError, binascii.Error):
        raise InvalidInput("invalid next_page") from None
    try:
        iterator = temporal.list_workflows(query, page_size=page_size, next_page_token=token)
        await iterator.fetch_next_page()
    except RPCError as exc:
        # A token Temporal cannot read comes back INVALID_ARGUMENT or (SQLite visibility)
        # UNKNOWN: the caller's mistake, not an outage.
        if next_page and exc.status in (RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.UNKNOWN):
            raise InvalidInput("invalid next_page") from None
        raise DependencyUnavailable(
            "Temporal visibility did not answer", details={"cause": exc.message[:300]}
        ) from None
    except RuntimeError as exc:
        raise temporal_unreachable(exc, "Temporal visibility did not answer") from None
    following = iterator.next_page_token
    cursor = base64.urlsafe_b64encode(following).decode() if following else None
    return iterator.current_page or [], cursor
