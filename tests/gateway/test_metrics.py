"""``/metrics`` on the gateway: public, in the Prometheus text format, labelled by route template
(never by an id), and 404 when metrics are off."""

from __future__ import annotations

import re
import uuid

import httpx

from common.settings import Settings
from gateway.app import create_app
from tests.conftest import Tokens


def _series(text: str, name: str) -> dict[str, float]:
    """``{labels}`` -> value of every sample of ``name``."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(\{{.*\}}) (\S+)", line)
        if match:
            found[match[1]] = float(match[2])
    return found


async def test_metrics_are_public_and_labelled_by_route_template(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    missing = uuid.uuid4()
    viewer = tokens.headers("infra-viewer")
    assert (await api.get(f"/api/v1/databases/{missing}", headers=viewer)).status_code == 404
    assert (await api.get(f"/no/such/{missing}")).status_code == 404
    answer = await api.get("/metrics")  # no token
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    requests = _series(answer.text, "tenantflow_http_requests_total")
    assert requests['{method="GET",route="/api/v1/databases/{database_id}",status="404"}'] == 1
    assert requests['{method="GET",route="unmatched",status="404"}'] == 1
    durations = _series(answer.text, "tenantflow_http_request_duration_seconds_count")
    assert durations['{method="GET",route="/api/v1/databases/{database_id}"}'] == 1
    # Ids never become labels: cardinality stays bounded with 100,000 targets.
    assert str(missing) not in answer.text


async def test_received_events_are_counted_by_type(api: httpx.AsyncClient, tokens: Tokens) -> None:
    event: dict[str, object] = {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": "tests/metrics",
        "type": f"com.example.unknown.{uuid.uuid4().hex}",
        "data": {},
    }
    answer = await api.post(
        "/api/v1/events",
        content=httpx.Request("POST", "/", json=event).content,
        headers={
            **tokens.headers("infra-operator"),
            "Content-Type": "application/cloudevents+json",
        },
    )
    assert answer.status_code == 422, answer.text
    text = (await api.get("/metrics")).text
    # An unknown type is counted as "unsupported", not by its (unbounded) name.
    assert _series(text, "tenantflow_events_received_total") == {'{type="unsupported"}': 1}
    assert str(event["type"]) not in text


async def test_metrics_off_answers_404(settings: Settings) -> None:
    off = settings.model_copy(
        update={"telemetry": settings.telemetry.model_copy(update={"metrics_enabled": False})}
    )
    app = create_app(off)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        answer = await client.get("/metrics")
    assert answer.status_code == 404
    assert answer.json()["error"]["type"] == "not_found"
