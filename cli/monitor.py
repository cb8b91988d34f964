"""``tenantflow monitor``: the monitoring summary (or ``--performance``) in a terminal."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from cli.commands import ApiOption, JsonOption, TokenOption, _api, _call, _print_json, console
from cli.servers import LabelOption, parse_labels


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def _print_summary(s: dict[str, Any]) -> None:
    outcomes, targets, times = s["outcomes"], s["targets"], s["target_migration_time"]
    health = s["health"]
    rate = targets["failure_rate"]
    typer.echo(f"snapshot of {s['generated_at']}")
    typer.echo(
        f"runs closed in {outcomes['window_hours']:g} h: "
        + ", ".join(
            f"{outcomes[k]} {k}"
            for k in ("completed", "cancelled", "terminated", "failed", "timed_out")
        )
    )
    typer.echo(
        f"targets of the last {targets['sampled_runs']} run(s): {targets['succeeded']} "
        f"succeeded, {targets['failed']} failed, {targets['up_to_date']} up to date; "
        f"failure rate {'-' if rate is None else f'{rate:.1%}'}"
    )
    typer.echo(
        f"per-target migration time: p50 {_or_dash(times['p50_ms'])} ms, "
        f"p95 {_or_dash(times['p95_ms'])} ms ({times['samples']} target(s))"
    )
    if s["active_runs"]:
        runs = Table("run", "set", "status", "done", "counts", "eta")
        for r in s["active_runs"]:
            counts = r.get("counts") or {}
            runs.add_row(
                r["run_id"],
                _or_dash(r["set_name"]),
                r["status"],
                "-" if r.get("percent_done") is None else f"{r['percent_done']}%",
                r.get("progress_error") or ", ".join(f"{k} {v}" for k, v in counts.items() if v),
                "-" if r.get("eta_seconds") is None else f"{r['eta_seconds']:.0f} s",
            )
        console.print(runs)
        if s["active_runs_truncated"]:
            typer.echo("(more runs are open: GET /api/v1/migrations?status=running)")
    else:
        typer.echo("no active run")
    scope = ",".join(f"{k}={v}" for k, v in s["labels"].items()) or "all targets"
    typer.echo(
        f"health ({scope}): {health['checked']} checked, {health['unreachable']} unreachable, "
        f"{health['drifted']} drifted, {health['behind']} behind"
    )
    if health["sets"]:
        sets = Table("set", "targets", "per version", "behind", "drifted")
        for h in health["sets"]:
            versions = ", ".join(f"{v}: {n}" for v, n in h["versions"].items())
            sets.add_row(
                h["set_name"], str(h["targets"]), versions, str(h["behind"]), str(h["drifted"])
            )
        console.print(sets)


def _print_performance(p: dict[str, Any]) -> None:
    typer.echo(
        f"snapshot of {p['generated_at']}; latencies of this gateway process over "
        f"{p['latency_window_seconds']:g} s"
    )
    routes = Table("route", "count", "p50 ms", "p95 ms", "p99 ms", "max ms")
    for r in p["routes"]:
        routes.add_row(
            r["route"],
            str(r["count"]),
            str(r["p50_ms"]),
            str(r["p95_ms"]),
            str(r["p99_ms"]),
            str(r["max_ms"]),
        )
    console.print(routes)
    queues = Table("task queue", "type", "backlog", "polled by")
    for q in p["task_queues"]:
        pollers = ", ".join(x["identity"] for x in q["pollers"]) or "NO WORKER"
        queues.add_row(q["task_queue"], q["type"], _or_dash(q["backlog"]), pollers)
    console.print(queues)


def monitor(
    label: LabelOption = None,
    performance: Annotated[
        bool,
        typer.Option("--performance", help="Gateway latency per route and the task queue instead."),
    ] = False,
    token: TokenOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """The fleet at a glance: active runs, outcomes, failure rate, per-target time, health.

    ``--label`` limits the health part to targets with those labels."""
    client = _api(api, token)
    if performance:
        result = _call(client, "GET", "/api/v1/monitoring/performance")
    else:
        params = [("label", f"{k}={v}") for k, v in parse_labels(label).items()]
        result = _call(client, "GET", "/api/v1/monitoring/summary", params=params)
    if as_json:
        _print_json(result)
    elif performance:
        _print_performance(result)
    else:
        _print_summary(result)


def register(app: typer.Typer) -> None:
    """Add ``tenantflow monitor`` to the command line."""
    app.command("monitor")(monitor)
