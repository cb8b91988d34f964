"""``tenantflow health``'s output for answers the end-to-end test does not produce: listings over
several pages, drift with more differences than the gateway lists, drift not judged, and the
``--json`` forms. The gateway is the fake of tests/cli/test_api.py; the CLI runs in-process."""

from __future__ import annotations

import json
from typing import Any

import httpx
from typer.testing import CliRunner

from cli.health import _describe
from cli.main import app
from tests.cli.test_api import FakeGateway, fake_gateway

__all__ = ["fake_gateway"]

GW = "http://gw.example"
AUTH = ["--api", GW, "--token", "t0k"]


def _snapshot(**changes: Any) -> dict[str, Any]:
    snapshot: dict[str, Any] = {
        "database_id": "d-1",
        "reachable": True,
        "latency_ms": 1.5,
        "server_version": "18.1",
        "sets": [],
        "ledger_version": None,
        "drift": {},
        "checked_at": "2026-12-03T12:00:00Z",
        "run_id": None,
    }
    snapshot.update(changes)
    return snapshot


def test_describe_drift_without_a_set_lists_and_counts_the_rest() -> None:
    text = _describe(
        _snapshot(
            drift={
                "drifted": True,
                "source": "baseline",
                "total_differences": 5,
                "differences": ["table a: column x added", "index b dropped"],
            }
        )
    )
    lines = text.splitlines()
    assert lines[0] == "health of d-1"
    assert "  latency       1.5 ms" in lines
    assert "  sets          none assigned (ledger -)" in lines
    assert "  drift         drifted against baseline: 5 object(s)" in lines
    assert lines[-4:] == [
        "                  table a: column x added",
        "                  index b dropped",
        "                  ... and 3 more",
        "  last checked  2026-12-03T12:00:00Z",
    ]


def test_describe_drift_not_judged_says_why() -> None:
    text = _describe(
        _snapshot(reachable=False, error=None, latency_ms=None, drift={"reason": "no reference"})
    )
    assert "  reachable     no: unknown error" in text.splitlines()
    assert "  drift         not judged: no reference" in text.splitlines()
    assert "  server        PostgreSQL 18.1" in text.splitlines()


def _page(items: list[dict[str, Any]], cursor: str | None) -> httpx.Response:
    return httpx.Response(200, json={"items": items, "next_cursor": cursor})


def _target(name: str) -> dict[str, Any]:
    return {
        "id": f"id-{name}",
        "name": name,
        "host": "db.example",
        "port": 5432,
        "labels": {"tier": "free"},
    }


def test_health_list_follows_every_page(fake_gateway: FakeGateway) -> None:
    fake_gateway.answer(
        "GET",
        "/api/v1/databases",
        _page([_target("b"), _target("a")], "c2"),
        _page([_target("c")], None),
    )
    result = CliRunner().invoke(
        app, ["health", "list", "--state", "drifted", "--label", "tier=free", "--json", *AUTH]
    )
    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout)["items"]
    assert [(d["name"], d["health"]) for d in items] == [
        ("a", ["drifted"]),
        ("b", ["drifted"]),
        ("c", ["drifted"]),
    ]
    pages = fake_gateway.seen("GET", "/api/v1/databases")
    assert [p.url.params.get("cursor") for p in pages] == [None, "c2"]
    assert all(p.url.params.get_list("label") == ["tier=free"] for p in pages)
    assert all(p.url.params["health"] == "drifted" for p in pages)


def test_health_sweep_json(fake_gateway: FakeGateway) -> None:
    started = {"run_id": "r-1", "workflow_id": "health-sweep-r-1"}
    fake_gateway.answer("POST", "/api/v1/health/sweep", httpx.Response(202, json=started))
    result = CliRunner().invoke(app, ["health", "sweep", "--label", "tier=free", "--json", *AUTH])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == started
    sent = fake_gateway.seen("POST", "/api/v1/health/sweep")[0]
    assert sent.url.params.get_list("label") == ["tier=free"]
    assert sent.headers["Authorization"] == "Bearer t0k"


DRIFT = {
    "set_name": "billing",
    "versions": [
        {
            "version": "3",
            "targets": 2,
            "drifted": [
                {
                    "name": "t-1",
                    "database_id": "d-1",
                    "source": "reference",
                    "total_differences": 4,
                    "differences": ["table a: column x added"],
                }
            ],
        },
        {"version": None, "targets": 1, "drifted": []},
    ],
}


def test_health_drift_names_what_it_does_not_list(fake_gateway: FakeGateway) -> None:
    fake_gateway.answer("GET", "/api/v1/drift", httpx.Response(200, json=DRIFT))
    result = CliRunner().invoke(app, ["health", "drift", "--set", "billing", *AUTH])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "set billing"
    assert lines[-3:] == [
        "drifted at 3: t-1 (d-1), 4 object(s) against reference",
        "  table a: column x added",
        "  ... and 3 more",
    ]
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in lines if "│" in line]
    assert cells == [["3", "2", "1"], ["-", "1", "0"]]
    assert fake_gateway.seen("GET", "/api/v1/drift")[0].url.params["set"] == "billing"


def test_health_drift_json(fake_gateway: FakeGateway) -> None:
    fake_gateway.answer("GET", "/api/v1/drift", httpx.Response(200, json=DRIFT))
    result = CliRunner().invoke(app, ["health", "drift", "--set", "billing", "--json", *AUTH])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == DRIFT
