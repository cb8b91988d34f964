"""The metric names tenantflow exports (gateway /metrics and the worker's metrics port), and a
small PromQL scanner: the Prometheus rules and the Grafana dashboard may use only these, Temporal
SDK metrics (``temporal_*``) and Prometheus's own ``up``."""

from __future__ import annotations

import re

COUNTERS = frozenset(
    {
        "tenantflow_http_requests_total",
        "tenantflow_runs_started_total",
        "tenantflow_runs_ended_total",
        "tenantflow_runs_paused_total",
        "tenantflow_targets_migrated_total",
        "tenantflow_targets_failed_total",
        "tenantflow_versions_applied_total",
        "tenantflow_lock_timeout_retries_total",
        "tenantflow_events_received_total",
        "tenantflow_webhook_deliveries_total",
    }
)
GAUGES = frozenset({"tenantflow_server_connections_in_use", "tenantflow_health_targets"})
HISTOGRAMS = frozenset(
    {
        "tenantflow_http_request_duration_seconds",
        "tenantflow_target_migration_duration_seconds",
        "tenantflow_provisioning_duration_seconds",
    }
)
METRICS = (
    COUNTERS
    | GAUGES
    | {f"{name}{suffix}" for name in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
)

# PromQL words that look like identifiers but are functions, operators or keywords.
_PROMQL_WORD_LIST = """
    sum min max avg count stddev stdvar topk bottomk quantile count_values group by without on
    ignoring group_left group_right and or unless bool offset rate irate increase delta idelta
    deriv histogram_quantile absent absent_over_time vector scalar time clamp_min clamp_max
    clamp abs ceil floor round sort sort_desc label_replace label_join sum_over_time
    avg_over_time max_over_time min_over_time count_over_time last_over_time changes resets
    predict_linear timestamp le inf nan
"""
_PROMQL_WORDS = frozenset(_PROMQL_WORD_LIST.split())
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*")
# Grafana template variables ($interval, ${job}, $__rate_interval) are not metrics.
_VARIABLES = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (strings, matchers, ranges and the names of
    functions, aggregations and grouping labels removed)."""
    text = _VARIABLES.sub(" ", expr)
    text = _STRINGS.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    # Labels in by (...) / without (...) / on (...) / ignoring (...) are not metrics.
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    return {
        word
        for word in _IDENTIFIER.findall(text)
        if word.lower() not in _PROMQL_WORDS and not re.fullmatch(r"[eE]\d*", word)
    }


def unknown_metrics(expr: str) -> set[str]:
    """Names in ``expr`` that tenantflow does not export (``temporal_*`` and ``up`` are fine)."""
    return {
        name
        for name in metric_names(expr)
        if name not in METRICS and not name.startswith("temporal_") and name != "up"
    }
