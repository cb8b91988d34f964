"""The webhook side's arithmetic equals the Prometheus rules': the same text parsed, the same
rate over a counter reset, the same ``histogram_quantile`` (2.425 s is what ``promtool test
rules`` computes for the latency case in deploy/prometheus/alerts_test.yml)."""

from __future__ import annotations

import pytest

from activities.alerts import (
    AlertActivities,
    add_samples,
    difference,
    gateway_conditions,
    histogram_quantile,
    parse_gateway_metrics,
)
from common.settings import AlertSettings
from models.alerts import AlertName, EvaluateAlertsInput, GatewaySample

_DB = 'method="GET",route="/api/v1/databases"'
_STREAM = 'method="GET",route="/api/v1/migrations/{run_id}/stream"'
EXPOSITION = f"""\
# HELP tenantflow_http_requests_total Requests.
# TYPE tenantflow_http_requests_total counter
tenantflow_http_requests_total{{{_DB},status="200"}} 90.0
tenantflow_http_requests_total{{{_DB},status="500"}} 6.0
tenantflow_http_requests_total{{method="POST",route="/api/v1/events",status="503"}} 4.0
tenantflow_http_requests_total{{{_DB},status="404"}} 50.0
tenantflow_http_request_duration_seconds_bucket{{{_DB},le="0.5"}} 1.0
tenantflow_http_request_duration_seconds_bucket{{{_DB},le="1.0"}} 2.0
tenantflow_http_request_duration_seconds_bucket{{{_DB},le="+Inf"}} 3.0
tenantflow_http_request_duration_seconds_bucket{{{_STREAM},le="0.5"}} 0.0
tenantflow_http_request_duration_seconds_bucket{{{_STREAM},le="+Inf"}} 9.0
tenantflow_http_request_duration_seconds_count{{{_DB}}} 3.0
"""


def test_parse_counts_5xx_and_buckets_without_streams() -> None:
    sample = parse_gateway_metrics(EXPOSITION)
    assert (sample.requests, sample.errors) == (150.0, 10.0)
    assert sample.buckets == {"0.5": 1.0, "1.0": 2.0, "+Inf": 3.0}
    doubled = add_samples(sample, sample)
    assert (doubled.requests, doubled.buckets["+Inf"]) == (300.0, 6.0)


def test_histogram_quantile_matches_promql() -> None:
    # alerts_test.yml: 60 requests, all between 1 s and 2.5 s -> p95 2.425 s.
    assert histogram_quantile(0.95, {"0.5": 0, "1.0": 0, "2.5": 60, "+Inf": 60}) == pytest.approx(
        2.425
    )
    # A rank in the +Inf bucket answers the highest finite bound, as PromQL does.
    assert histogram_quantile(0.95, {"0.5": 1, "+Inf": 100}) == 0.5
    assert histogram_quantile(0.95, {"0.5": 0, "+Inf": 0}) is None
    assert histogram_quantile(0.5, {}) is None


def test_a_counter_reset_counts_from_zero() -> None:
    before = GatewaySample(requests=1000, errors=10, buckets={"+Inf": 1000})
    after = GatewaySample(requests=40, errors=4, buckets={"+Inf": 40})
    assert difference(before, after) == after
    later = GatewaySample(requests=140, errors=14, buckets={"+Inf": 140})
    assert difference(after, later) == GatewaySample(requests=100, errors=10, buckets={"+Inf": 100})


def test_gateway_conditions_use_the_rule_thresholds() -> None:
    settings = AlertSettings()
    start = GatewaySample(requests=0, errors=0, buckets={"0.5": 0, "1.0": 0, "2.5": 0, "+Inf": 0})
    bad = GatewaySample(requests=60, errors=6, buckets={"0.5": 0, "1.0": 0, "2.5": 60, "+Inf": 60})
    errors, latency = gateway_conditions(start, bad, settings)
    assert (errors.name, errors.firing, errors.value) == (AlertName.GATEWAY_ERRORS, True, 0.1)
    assert (latency.name, latency.firing) == (AlertName.GATEWAY_LATENCY, True)
    assert latency.value == pytest.approx(2.425)
    # Five per cent exactly is not "more than five per cent", as in the rule (> 0.05).
    edge = GatewaySample(requests=100, errors=5, buckets={"0.5": 100, "+Inf": 100})
    assert [c.firing for c in gateway_conditions(GatewaySample(), edge, settings)] == [
        False,
        False,
    ]
    # Too few requests to judge: nothing fires, whatever the ratio.
    few = GatewaySample(requests=3, errors=3, buckets={"2.5": 3, "+Inf": 3})
    assert not any(c.firing for c in gateway_conditions(GatewaySample(), few, settings))


def test_a_histogram_that_went_down_while_the_counters_did_not_counts_from_zero() -> None:
    """A gateway restarted and has answered more requests since than before, but its
    histogram buckets started again: the current sample is what happened."""
    before = GatewaySample(requests=10, errors=1, buckets={"0.5": 8, "+Inf": 10})
    after = GatewaySample(requests=12, errors=1, buckets={"0.5": 2, "+Inf": 12})
    assert difference(before, after) == after


def test_a_rank_on_a_bucket_boundary_answers_that_bound() -> None:
    # The 0-quantile ranks at 0, which the first (empty) bucket already holds.
    assert histogram_quantile(0.0, {"0.5": 0, "1.0": 4, "+Inf": 4}) == 0.5


async def test_evaluating_alerts_needs_a_temporal_client() -> None:
    activities = AlertActivities(None, AlertSettings())
    with pytest.raises(RuntimeError, match="needs a Temporal client"):
        await activities.evaluate_alerts(EvaluateAlertsInput())
