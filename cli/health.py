"""``tenantflow health show|list|sweep|drift``: fleet health snapshots, drift and sweeps."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from cli.api import Api
from cli.commands import ApiOption, JsonOption, TokenOption, _api, _call, _print_json, console
from cli.servers import LabelOption, parse_labels

health_app = typer.Typer(help="Fleet health: snapshots, unhealthy targets, drift, sweeps.")


class HealthState(StrEnum):
    """What ``GET /api/v1/databases?health=`` filters on."""

    UNREACHABLE = "unreachable"
    DRIFTED = "drifted"
    BEHIND = "behind"


def _label_params(label: list[str] | None) -> list[tuple[str, str]]:
    """``--label`` options checked locally (a usage error) and sent as ``label=k=v``."""
    return [("label", f"{k}={v}") for k, v in parse_labels(label).items()]


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def _describe(h: dict[str, Any]) -> str:
    reachable = "yes" if h["reachable"] else f"no: {h.get('error') or 'unknown error'}"
    latency = "-" if h.get("latency_ms") is None else f"{h['latency_ms']:.1f} ms"
    server = f"PostgreSQL {h['server_version']}" if h.get("server_version") else "-"
    lines = [
        f"health of {h['database_id']}",
        f"  reachable     {reachable}",
        f"  latency       {latency}",
        f"  server        {server}",
    ]
    sets = h.get("sets") or []
    if not sets:
        lines.append(f"  sets          none assigned (ledger {_or_dash(h.get('ledger_version'))})")
    width = max((len(s["set_name"]) for s in sets), default=0)
    for i, s in enumerate(sets):
        behind = "  behind" if s["behind"] else ""
        lines.append(
            f"  {'sets' if i == 0 else '':<14}{s['set_name']:<{width}}  "
            f"ledger {_or_dash(s['version'])}, assigned {_or_dash(s['expected'])}{behind}"
        )
    drift = h.get("drift") or {}
    if drift.get("drifted"):
        against = drift.get("source") or "none"
        if drift.get("set_name"):
            against += f" ({drift['set_name']} at {_or_dash(drift.get('version'))})"
        lines.append(
            f"  drift         drifted against {against}: "
            f"{drift.get('total_differences', 0)} object(s)"
        )
        differences = drift.get("differences") or []
        lines += [f"                  {d}" for d in differences]
        more = drift.get("total_differences", 0) - len(differences)
        if more > 0:
            lines.append(f"                  ... and {more} more")
    elif drift.get("reason"):
        lines.append(f"  drift         not judged: {drift['reason']}")
    else:
        lines.append("  drift         none")
    sweep = f" (sweep {h['run_id']})" if h.get("run_id") else ""
    lines.append(f"  last checked  {h['checked_at']}{sweep}")
    return "\n".join(lines)


@health_app.command("show")
def health_show(
    database_id: Annotated[str, typer.Argument(help="The target's id.")],
    token: TokenOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """A target's latest health snapshot.

    Reachability, latency, server version, each assigned set's ledger and assigned version,
    drift with the differing objects named, and when it was checked."""
    path = f"/api/v1/databases/{quote(database_id, safe='')}/health"
    result = _call(_api(api, token), "GET", path)
    if as_json:
        _print_json(result)
        return
    typer.echo(_describe(result))


def _targets(client: Api, state: HealthState, labels: list[tuple[str, str]]) -> list[Any]:
    """Every page of ``GET /api/v1/databases?health=state`` (with the label filters)."""
    items: list[Any] = []
    cursor: str | None = None
    while True:
        params = [*labels, ("health", state.value), ("limit", "1000")]
        if cursor:
            params.append(("cursor", cursor))
        page = _call(client, "GET", "/api/v1/databases", params=params)
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


@health_app.command("list")
def health_list(
    state: Annotated[
        HealthState | None,
        typer.Option(help="Only targets in this state (default: any of them)."),
    ] = None,
    label: LabelOption = None,
    token: TokenOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """Unhealthy targets (unreachable, drifted or behind at the latest sweep), by name."""
    client = _api(api, token)
    labels = _label_params(label)
    found: dict[str, dict[str, Any]] = {}
    for wanted in [state] if state else list(HealthState):
        for item in _targets(client, wanted, labels):
            found.setdefault(item["id"], {**item, "health": []})["health"].append(wanted.value)
    items = sorted(found.values(), key=lambda d: str(d["name"]))
    if as_json:
        _print_json({"items": items})
        return
    table = Table("name", "id", "state", "address", "labels")
    for d in items:
        table.add_row(
            d["name"],
            d["id"],
            ", ".join(d["health"]),
            f"{d['host']}:{d['port']}",
            ",".join(f"{k}={v}" for k, v in d["labels"].items()),
        )
    console.print(table)


@health_app.command("sweep")
def health_sweep(
    label: LabelOption = None,
    token: TokenOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start a health sweep now and print its run id.

    Every target, or those with all the given labels; the snapshots appear as it goes."""
    result = _call(_api(api, token), "POST", "/api/v1/health/sweep", params=_label_params(label))
    if as_json:
        _print_json(result)
        return
    typer.echo(f"sweep {result['run_id']} started (workflow {result['workflow_id']})")


@health_app.command("drift")
def health_drift(
    set_name: Annotated[str, typer.Option("--set", help="The migration set.")],
    token: TokenOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """Drift of one set's targets, grouped by ledger version.

    Each drifted target is named with the objects that differ."""
    result = _call(_api(api, token), "GET", "/api/v1/drift", params={"set": set_name})
    if as_json:
        _print_json(result)
        return
    versions = result["versions"]
    table = Table("version", "targets", "drifted")
    for v in versions:
        table.add_row(_or_dash(v["version"]), str(v["targets"]), str(len(v["drifted"])))
    console.print(f"set {result['set_name']}")
    console.print(table)
    for v in versions:
        for d in v["drifted"]:
            typer.echo(
                f"drifted at {_or_dash(v['version'])}: {d['name']} ({d['database_id']}), "
                f"{d['total_differences']} object(s) against {d['source']}"
            )
            for difference in d["differences"]:
                typer.echo(f"  {difference}")
            more = d["total_differences"] - len(d["differences"])
            if more > 0:
                typer.echo(f"  ... and {more} more")
