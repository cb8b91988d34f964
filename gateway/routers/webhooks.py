"""``/api/v1/webhooks``: endpoints that receive tenantflow's events, and their deliveries."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from temporalio.client import WorkflowExecution, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from activities.webhooks import EVENT_TYPE_KEY, STATUS_KEY
from common.catalog.webhooks import WebhookRepository
from common.errors import DependencyUnavailable, NotFound
from gateway.auth.deps import WebhooksManage
from gateway.deps import TemporalDep, temporal_unreachable
from gateway.visibility import visibility_page
from models.errors import ErrorResponse
from models.webhooks import (
    EVENT_ID_PATTERN,
    DeliveryAttempt,
    DeliveryDetail,
    DeliveryPage,
    DeliveryResult,
    DeliverySummary,
    Webhook,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookUpdate,
    delivery_workflow_id,
)
from workflows.webhooks import DeliverWebhookWorkflow

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such webhook endpoint."}
}


async def get_repository(request: Request) -> WebhookRepository:
    """The repository built in the lifespan (catalog pool + credential cipher)."""
    repository: WebhookRepository = request.app.state.webhooks
    return repository


RepositoryDep = Annotated[WebhookRepository, Depends(get_repository)]


@router.post("", status_code=201, summary="Register a webhook endpoint")
async def create_webhook(
    spec: WebhookCreate, repository: RepositoryDep, principal: WebhooksManage
) -> WebhookCreated:
    """Store the endpoint; the answer carries its signing secret, shown this once only."""
    del principal  # authorisation only
    return await repository.create(spec)


@router.get("", summary="List webhook endpoints")
async def list_webhooks(repository: RepositoryDep, principal: WebhooksManage) -> WebhookList:
    """Every endpoint, newest first, without secrets."""
    del principal
    return WebhookList(items=await repository.list())


@router.get("/{webhook_id}", summary="One webhook endpoint", responses=NOT_FOUND)
async def get_webhook(
    webhook_id: uuid.UUID, repository: RepositoryDep, principal: WebhooksManage
) -> Webhook:
    """The endpoint without its secret."""
    del principal
    return await repository.get(webhook_id)


@router.patch("/{webhook_id}", summary="Change or re-enable an endpoint", responses=NOT_FOUND)
async def update_webhook(
    webhook_id: uuid.UUID,
    change: WebhookUpdate,
    repository: RepositoryDep,
    principal: WebhooksManage,
) -> Webhook:
    """Change url, event types, description or ``enabled``; enabling clears the reason."""
    del principal
    return await repository.update(webhook_id, change)


@router.delete(
    "/{webhook_id}", status_code=204, summary="Delete a webhook endpoint", responses=NOT_FOUND
)
async def delete_webhook(
    webhook_id: uuid.UUID, repository: RepositoryDep, principal: WebhooksManage
) -> Response:
    """Remove the endpoint; deliveries still retrying stop at their next attempt."""
    del principal
    await repository.delete(webhook_id)
    return Response(status_code=204)


# A delivery closed by Temporal itself (terminated, timed out) has a stale status attribute.
_CLOSED_BY_TEMPORAL = {
    WorkflowExecutionStatus.CANCELED: "cancelled",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.TIMED_OUT: "timed_out",
}


def _outcome(status: WorkflowExecutionStatus | None, attribute: str | None) -> str:
    if status in _CLOSED_BY_TEMPORAL:
        return _CLOSED_BY_TEMPORAL[status]
    return attribute or "pending"


def _summary(webhook_id: uuid.UUID, execution: WorkflowExecution) -> DeliverySummary:
    return DeliverySummary(
        event_id=execution.id.removeprefix(f"webhook-{webhook_id}-"),
        event_type=execution.typed_search_attributes.get(EVENT_TYPE_KEY),
        workflow_id=execution.id,
        outcome=_outcome(execution.status, execution.typed_search_attributes.get(STATUS_KEY)),
        started_at=execution.start_time,
        closed_at=execution.close_time,
    )


@router.get(
    "/{webhook_id}/deliveries",
    summary="List an endpoint's deliveries (from Temporal visibility)",
    responses=NOT_FOUND,
)
async def list_deliveries(
    webhook_id: uuid.UUID,
    repository: RepositoryDep,
    temporal: TemporalDep,
    principal: WebhooksManage,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
    next_page: Annotated[str | None, Query(max_length=4096)] = None,
) -> DeliveryPage:
    """Newest first, with each delivery's outcome; follow ``next_page``."""
    del principal
    await repository.get(webhook_id)  # 404 for an unknown endpoint
    # The id is a parsed UUID, safe to put in the visibility query.
    query = (
        f"WorkflowType = 'DeliverWebhookWorkflow' AND TenantflowWebhookEndpoint = '{webhook_id}'"
    )
    executions, following = await visibility_page(
        temporal, query, page_size=page_size, next_page=next_page
    )
    return DeliveryPage(items=[_summary(webhook_id, e) for e in executions], next_page=following)


@router.get(
    "/{webhook_id}/deliveries/{event_id}",
    summary="One delivery and its attempts",
    responses=NOT_FOUND,
)
async def get_delivery(
    webhook_id: uuid.UUID,
    event_id: Annotated[str, Path(pattern=EVENT_ID_PATTERN)],
    temporal: TemporalDep,
    principal: WebhooksManage,
) -> DeliveryDetail:
    """Every attempt: when, status code or connection error, and when the next is due."""
    del principal
    workflow_id = delivery_workflow_id(webhook_id, event_id)
    handle: WorkflowHandle[DeliverWebhookWorkflow, DeliveryResult] = (
        temporal.get_workflow_handle_for(DeliverWebhookWorkflow.run, workflow_id)
    )
    try:
        description = await handle.describe()
        attempts: list[DeliveryAttempt] = await handle.query(DeliverWebhookWorkflow.attempts)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise NotFound(
                f"no delivery of event {event_id} to webhook {webhook_id}",
                details={"webhook_id": str(webhook_id), "event_id": event_id},
            ) from None
        raise DependencyUnavailable(
            "Temporal did not answer", details={"cause": exc.message[:300]}
        ) from None
    except RuntimeError as exc:
        raise temporal_unreachable(exc) from None
    return DeliveryDetail(
        event_id=event_id,
        workflow_id=workflow_id,
        outcome=_outcome(description.status, description.typed_search_attributes.get(STATUS_KEY)),
        attempts=attempts,
    )
