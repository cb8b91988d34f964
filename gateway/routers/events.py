"""``/api/v1/events``: CloudEvents 1.0 in (structured or binary HTTP mode), each starting one
run whose workflow id derives from the event's source and id; received events are listed from
Temporal visibility."""

from __future__ import annotations

from typing import Annotated, Any

from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.exceptions import BaseCloudEventException, MissingRequiredAttributeError
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from fastapi import APIRouter, Query, Request
from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from activities.events import event_password_context
from common.crypto import CredentialCipher, KeyRing
from common.errors import DependencyUnavailable, InvalidInput, RequestValidationFailed
from common.network_policy import check_registered_host
from common.settings import Settings
from gateway.auth.deps import EventsPublish, MonitoringRead
from gateway.deps import SettingsDep, TemporalDep
from gateway.event_types import (
    CURRENT_EVENT,
    EVENT_SOURCE_KEY,
    EVENT_STARTERS,
    EVENT_TYPE_KEY,
    EventIdentity,
    UnsupportedEvent,
    event_start_options,
    register_event_type,
    validate_event_data,
)
from gateway.metrics import count_event
from gateway.visibility import visibility_page
from models.databases import DatabaseCreate
from models.errors import ErrorResponse
from models.events import (
    DatabaseRegistration,
    EventAccepted,
    EventType,
    ReceivedEvent,
    ReceivedEventPage,
    RegisterDatabaseInput,
)
from workflows.events import RegisterDatabaseWorkflow

router = APIRouter(prefix="/api/v1/events", tags=["events"])

STRUCTURED = "application/cloudevents+json"
STATUS_KEY = SearchAttributeKey.for_keyword("TenantflowStatus")
_CLOSED = {
    WorkflowExecutionStatus.COMPLETED: "completed",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.CANCELED: "cancelled",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.TIMED_OUT: "timed_out",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "continued",
}

_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "Structured mode: the whole event as application/cloudevents+json. "
        "Binary mode: ce-specversion, ce-id, ce-source, ce-type headers and the data as body.",
        "content": {
            STRUCTURED: {
                "schema": {"type": "object"},
                "example": {
                    "specversion": "1.0",
                    "id": "evt-42",
                    "source": "/billing",
                    "type": "database.created",
                    "data": {"name": "tenant-42", "host": "db1", "database": "t42"},
                },
            },
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


async def start_register_database(
    temporal: Client, settings: Settings, event_id: str, data: dict[str, Any]
) -> str:
    """``database.created``: data as the body of ``POST /api/v1/databases``; the password is
    encrypted here and only the ciphertext enters the workflow."""
    spec = validate_event_data(DatabaseCreate, data)
    # The same allow-list as POST /api/v1/databases: refused at once, not at the first connect.
    check_registered_host(spec.host, settings.network)
    cipher = CredentialCipher(KeyRing.from_settings(settings.crypto))
    context = event_password_context(event_id)
    current = CURRENT_EVENT.get()
    handle = await temporal.start_workflow(
        RegisterDatabaseWorkflow.run,
        RegisterDatabaseInput(
            run_id=event_id,
            event_id=current.id if current else event_id,
            event_source=current.source if current else "",
            database=DatabaseRegistration.of(spec),
            password_encrypted=cipher.encrypt(spec.password.get_secret_value(), context=context),
            password_context=context,
        ),
        task_queue=settings.temporal.task_queue,
        **event_start_options(event_id),
    )
    return handle.first_execution_run_id or handle.run_id or ""


register_event_type(EventType.DATABASE_CREATED.value, start_register_database)


def _received_event(attributes: dict[str, Any], data: Any) -> CloudEvent:
    """The SDK's event factory, minus its defaults: a received event without ``id`` or
    ``specversion`` is malformed, not given a fresh id (which would defeat deduplication)."""
    for name in ("specversion", "id"):
        if name not in attributes:
            raise MissingRequiredAttributeError(name)
    return CloudEvent(attributes, data)


def _parse(request: Request, body: bytes) -> CloudEvent:
    """The request as a CloudEvent 1.0, or 400 saying why not."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    binary = {k: v for k, v in headers.items() if k.startswith("ce-")}
    content_type = headers.get("content-type", "")
    if binary:
        binary["content-type"] = content_type or "application/json"
        message = HTTPMessage(headers=binary, body=body)
    elif content_type.split(";")[0].strip().lower() == STRUCTURED:
        message = HTTPMessage(headers={"content-type": content_type}, body=body)
    else:
        raise InvalidInput(
            "not a CloudEvent: send application/cloudevents+json (structured mode) or "
            "ce-specversion, ce-id, ce-source and ce-type headers (binary mode)",
            details={"content_type": content_type[:100]},
        )
    try:
        event = from_http(message, JSONFormat(), _received_event)
    except (BaseCloudEventException, ValueError, TypeError, AttributeError, KeyError) as exc:
        raise InvalidInput(
            "malformed CloudEvent",
            details={"mode": "binary" if binary else "structured", "cause": str(exc)[:300]},
        ) from None
    # ``_received_event`` builds a 1.0 event, whose constructor refuses any other specversion
    # (a malformed event above).
    assert isinstance(event, CloudEvent)
    return event


async def _existing_run(temporal: Client, workflow_id: str) -> str:
    """The run already started under ``workflow_id`` (a redelivered event)."""
    description = await temporal.get_workflow_handle(workflow_id).describe()
    return description.run_id


@router.post(
    "",
    status_code=202,
    summary="Receive a CloudEvent (structured or binary mode)",
    openapi_extra=_BODY_DOC,
    responses={
        400: {"model": ErrorResponse, "description": "Not a well-formed CloudEvent 1.0."},
        422: {"model": ErrorResponse, "description": "Unknown type, or data it refuses."},
    },
)
async def receive_event(
    request: Request, principal: EventsPublish, temporal: TemporalDep, settings: SettingsDep
) -> EventAccepted:
    """Start the event's run; the same ``source`` and ``id`` again answers with that run."""
    del principal
    event = _parse(request, await request.body())
    identity = EventIdentity(id=event.get_id(), source=event.get_source(), type=event.get_type())
    starter = EVENT_STARTERS.get(identity.type)
    count_event(request, identity.type if starter is not None else "unsupported")
    if starter is None:
        raise UnsupportedEvent(
            f"unsupported event type {identity.type[:100]!r}",
            details={"type": identity.type[:100], "supported": sorted(EVENT_STARTERS)},
        )
    data = event.get_data()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RequestValidationFailed(
            "the event's data must be a JSON object", details={"type": identity.type}
        )
    workflow_id = identity.workflow_id
    token = CURRENT_EVENT.set(identity)
    try:
        try:
            run_id = await starter(temporal, settings, workflow_id, data)
        except WorkflowAlreadyStartedError:  # delivered before, and that run has ended
            run_id = await _existing_run(temporal, workflow_id)
    except (RPCError, RuntimeError) as exc:  # RuntimeError: the lazy client's connect failed
        raise DependencyUnavailable(
            "Temporal did not accept the event's run",
            details={
                "dependency": "temporal",
                "cause": exc.status.name if isinstance(exc, RPCError) else type(exc).__name__,
            },
        ) from None
    finally:
        CURRENT_EVENT.reset(token)
    return EventAccepted(
        id=identity.id,
        source=identity.source,
        type=identity.type,
        workflow_id=workflow_id,
        run_id=run_id,
    )


async def _listed(execution: WorkflowExecution) -> ReceivedEvent:
    """One received event as visibility and the run's memo describe it."""
    try:
        memo = await execution.memo()
    except Exception:  # an undecodable memo must not hide the rest of the page
        memo = {}
    attributes = execution.typed_search_attributes
    outcome = "running"
    if execution.status is not None and execution.status in _CLOSED:
        outcome = _CLOSED[execution.status]
        status = attributes.get(STATUS_KEY)
        if outcome == "completed" and status:
            outcome = status
    return ReceivedEvent(
        id=memo.get("event_id"),
        source=memo.get("event_source") or attributes.get(EVENT_SOURCE_KEY),
        type=attributes.get(EVENT_TYPE_KEY),
        received_at=execution.start_time,
        workflow_id=execution.id,
        run_id=execution.run_id,
        outcome=outcome,
        closed_at=execution.close_time,
    )


@router.get("", summary="List received events (from Temporal visibility)")
async def list_events(
    principal: MonitoringRead,
    temporal: TemporalDep,
    type: Annotated[str | None, Query(max_length=128, pattern=r"^[A-Za-z0-9._-]+$")] = None,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
    next_page: Annotated[str | None, Query(max_length=4096)] = None,
) -> ReceivedEventPage:
    """Newest first: type, source, id, received time, run and outcome; follow ``next_page``."""
    del principal
    clauses = ["WorkflowId STARTS_WITH 'event-'", "TenantflowEventSource IS NOT NULL"]
    if type is not None:  # restricted to safe characters by the pattern
        clauses.append(f"TenantflowEventType = '{type}'")
    executions, following = await visibility_page(
        temporal, " AND ".join(clauses), page_size=page_size, next_page=next_page
    )
    items = [await _listed(execution) for execution in executions]
    return ReceivedEventPage(
        items=items,
        next_page=following,
    )
