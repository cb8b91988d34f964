"""The events hook's pure parts: workflow ids from source and id, start options, data errors."""

from __future__ import annotations

import pytest
from pydantic import BaseModel
from temporalio.common import WorkflowIDReusePolicy

from common.errors import RequestValidationFailed
from gateway.event_types import (
    CURRENT_EVENT,
    EVENT_SOURCE_KEY,
    EVENT_TYPE_KEY,
    EventIdentity,
    event_start_options,
    event_workflow_id,
    validate_event_data,
)


def test_workflow_ids_are_stable_safe_and_keep_source_and_id_apart() -> None:
    first = event_workflow_id("/billing", "42")
    assert first == event_workflow_id("/billing", "42")
    assert first.startswith("event-") and first[6:].isalnum() and len(first) == 46
    # Where source ends and id begins matters: these are different events.
    assert event_workflow_id("a", "b\nc") != event_workflow_id("a\nb", "c")
    assert event_workflow_id("/billing", "43") != first
    assert event_workflow_id("/crm", "42") != first
    assert event_workflow_id("x" * 5000, "'; DROP").startswith("event-")


def test_start_options_carry_the_current_events_attributes_only_for_its_own_id() -> None:
    identity = EventIdentity(id="42", source="/billing", type="tenant.created")
    assert "search_attributes" not in event_start_options(identity.workflow_id)
    token = CURRENT_EVENT.set(identity)
    try:
        options = event_start_options(identity.workflow_id)
        other = event_start_options(event_workflow_id("/other", "1"))
    finally:
        CURRENT_EVENT.reset(token)
    assert options["id"] == identity.workflow_id
    assert options["id_reuse_policy"] is WorkflowIDReusePolicy.REJECT_DUPLICATE
    attributes = options["search_attributes"]
    assert attributes.get(EVENT_TYPE_KEY) == "tenant.created"
    assert attributes.get(EVENT_SOURCE_KEY) == "/billing"
    assert options["memo"] == {"event_id": "42", "event_source": "/billing"}
    assert "search_attributes" not in other


class _Data(BaseModel):
    name: str
    password: str


def test_invalid_data_names_fields_and_never_echoes_values() -> None:
    with pytest.raises(RequestValidationFailed) as refused:
        validate_event_data(_Data, {"name": 7, "password": ["s3cret-value"]})
    errors = refused.value.details["errors"]
    assert [e["loc"] for e in errors] == [["data", "name"], ["data", "password"]]
    assert "s3cret-value" not in str(refused.value.to_dict())
