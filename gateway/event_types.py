"""The hook other features use to handle event types in ``POST /api/v1/events``.

``EVENT_STARTERS`` maps an event type to an async starter ``(temporal client, settings, event
id, data) -> run id``. ``event id`` is the workflow id derived from the event's source and id
(``event-<sha256>``): a starter starts its workflow under exactly that id with the options of
``event_start_options(event_id)`` (id reuse rejected, search attributes and memo that
``GET /api/v1/events`` lists), so a redelivered event starts nothing new. A starter raises
``RequestValidationFailed`` for data it refuses (422). The gateway answers a duplicate with the
existing run itself: a starter need not catch ``WorkflowAlreadyStartedError``. Register with
``register_event_type`` at import time of the feature's router module::

    async def start_tenant_created(client, settings, event_id, data):
        spec = validate_event_data(TenantCreate, data)
        handle = await client.start_workflow(
            ProvisionTenantWorkflow.run, ..., task_queue=settings.temporal.task_queue,
            **event_start_options(event_id),
        )
        return handle.first_execution_run_id or handle.run_id or ""

    register_event_type("tenant.created", start_tenant_created)
"""

from __future__ import annotations

import contextvars
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio.client import Client
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from common.errors import RequestValidationFailed
from common.settings import Settings

EventStarter = Callable[[Client, Settings, str, dict[str, Any]], Awaitable[str]]

EVENT_STARTERS: dict[str, EventStarter] = {}

EVENT_TYPE_KEY = SearchAttributeKey.for_keyword("TenantflowEventType")
EVENT_SOURCE_KEY = SearchAttributeKey.for_keyword("TenantflowEventSource")
WORKFLOW_ID_PREFIX = "event-"

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True)
class EventIdentity:
    """The attributes of the event being handled, for the starter's search attributes."""

    id: str
    source: str
    type: str

    @property
    def workflow_id(self) -> str:
        """The workflow id: a hash of source and id, so any characters are safe."""
        return event_workflow_id(self.source, self.id)


CURRENT_EVENT: contextvars.ContextVar[EventIdentity | None] = contextvars.ContextVar(
    "tenantflow_current_event", default=None
)


class UnsupportedEvent(RequestValidationFailed):
    """The event's type has no handler (yet)."""

    error_type = "unsupported_event"


def event_workflow_id(source: str, event_id: str) -> str:
    """``event-<sha256 of source and id>``: CloudEvents identify an event by both."""
    digest = hashlib.sha256(f"{len(source)}:{source}\n{event_id}".encode()).hexdigest()
    return f"{WORKFLOW_ID_PREFIX}{digest[:40]}"


def register_event_type(event_type: str, starter: EventStarter) -> None:
    """Handle ``event_type`` with ``starter`` (replacing any earlier one)."""
    EVENT_STARTERS[event_type] = starter


def event_start_options(event_id: str) -> dict[str, Any]:
    """Keyword arguments for ``Client.start_workflow`` of the event ``event_id``: its id, no
    second run under it, and the search attributes and memo the event listing reads."""
    options: dict[str, Any] = {
        "id": event_id,
        "id_reuse_policy": WorkflowIDReusePolicy.REJECT_DUPLICATE,
        "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
    }
    current = CURRENT_EVENT.get()
    if current is not None and current.workflow_id == event_id:
        options["search_attributes"] = TypedSearchAttributes(
            [
                SearchAttributePair(EVENT_TYPE_KEY, current.type),
                SearchAttributePair(EVENT_SOURCE_KEY, current.source[:256]),
            ]
        )
        options["memo"] = {"event_id": current.id, "event_source": current.source}
    return options


def validate_event_data(model: type[ModelT], data: dict[str, Any]) -> ModelT:
    """``data`` as ``model``, or 422 naming the fields (never echoing values: may be secret)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationFailed(
            "the event's data does not match its type's schema",
            details={
                "errors": [
                    {
                        "loc": ["data", *(str(part) for part in err.get("loc", ()))],
                        "msg": str(err.get("msg", "")),
                        "type": str(err.get("type", "")),
                    }
                    for err in exc.errors()
                ]
            },
        ) from None
