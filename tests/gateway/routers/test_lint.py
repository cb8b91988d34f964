"""``GET /api/v1/migration-sets/{name}/lint``: every version's lock-risk findings without a run."""

from __future__ import annotations

import uuid

import httpx

from tests.conftest import Tokens

SETS = "/api/v1/migration-sets"
FILES = {
    "V1__accounts.sql": "CREATE TABLE accounts (id bigint PRIMARY KEY, email text);\n"
    "CREATE INDEX accounts_email ON accounts (email);",
    "U1__accounts.sql": "DROP TABLE accounts;",
    "V2__accounts_email_lower.sql": "-- look up by email\n"
    "CREATE INDEX accounts_email_lower ON accounts (lower(email));",
    "U2__accounts_email_lower.sql": "DROP INDEX accounts_email_lower;",
    "V3__accounts_rename.sql": "ALTER TABLE accounts RENAME COLUMN email TO address;",
}


async def _registered(api: httpx.AsyncClient, tokens: Tokens) -> str:
    name = f"lint-{uuid.uuid4().hex[:8]}"
    answer = await api.post(
        SETS, json={"name": name, "files": FILES}, headers=tokens.headers("infra-operator")
    )
    assert answer.status_code == 201, answer.text
    return name


async def test_lint_lists_each_versions_findings(api: httpx.AsyncClient, tokens: Tokens) -> None:
    name = await _registered(api, tokens)
    viewer = tokens.headers("infra-viewer")
    answer = await api.get(f"{SETS}/{name}/lint", headers=viewer)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["name"], body["direction"], body["errors"], body["warnings"]) == (
        name,
        "up",
        1,
        1,
    )
    found = {
        v["version"]: [(r["rule"], r["line"]) for r in v["warnings"]] for v in body["versions"]
    }
    assert found == {
        "1": [],
        "2": [("require-concurrent-index-creation", 2)],
        "3": [("renaming-column", 1)],
    }
    risk = body["versions"][1]["warnings"][0]
    assert risk["severity"] == "error" and risk["message"] and risk["advice"]
    assert risk["statement"].startswith("CREATE INDEX accounts_email_lower")
    assert body["versions"][1]["source"] == "V2__accounts_email_lower.sql"

    down = (await api.get(f"{SETS}/{name}/lint?direction=down", headers=viewer)).json()
    assert {v["version"]: [r["rule"] for r in v["warnings"]] for v in down["versions"]} == {
        "1": ["ban-drop-table"],
        "2": ["require-concurrent-index-deletion"],
    }

    off = (await api.get(f"{SETS}/{name}/lint?lock_timeout_ms=0", headers=viewer)).json()
    assert [r["rule"] for r in off["versions"][2]["warnings"]] == [
        "renaming-column",
        "require-lock-timeout",
    ]


async def test_lint_refusals(api: httpx.AsyncClient, tokens: Tokens) -> None:
    viewer = tokens.headers("infra-viewer")
    missing = await api.get(f"{SETS}/no-such-{uuid.uuid4().hex[:6]}/lint", headers=viewer)
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found"
    name = await _registered(api, tokens)
    wrong = await api.get(f"{SETS}/{name}/lint?direction=sideways", headers=viewer)
    assert wrong.status_code == 422
    assert "error" in wrong.json()
    anonymous = await api.get(f"{SETS}/{name}/lint")
    assert anonymous.status_code == 401
