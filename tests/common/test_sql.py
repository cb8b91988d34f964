"""Quoting helpers: identifiers are checked, literals survive PostgreSQL unchanged."""

from __future__ import annotations

import asyncpg
import pytest

from cli.stack import EmbeddedPostgres
from common.errors import InvalidInput
from common.sql import quote_ident, quote_literal


def test_quote_literal_doubles_quotes_and_keeps_backslashes() -> None:
    assert quote_literal("it's") == "'it''s'"
    assert quote_literal("a\\b") == "'a\\b'"
    with pytest.raises(InvalidInput):
        quote_literal("nul\x00")


def test_quote_ident_refuses_what_the_identifier_rule_refuses() -> None:
    assert quote_ident("tenant_a") == '"tenant_a"'
    with pytest.raises(InvalidInput):
        quote_ident('bad"name; DROP')


@pytest.mark.parametrize(
    "value",
    ["plain", "it's", "'; DROP TABLE x; --", "back\\slash\\'", "ünïcode ✓", "$$ $tag$", "\n\t"],
)
async def test_quote_literal_round_trips_through_postgresql(
    postgres: EmbeddedPostgres, value: str
) -> None:
    conn = await asyncpg.connect(
        postgres.dsn(), server_settings={"standard_conforming_strings": "on"}
    )
    try:
        assert await conn.fetchval(f"SELECT {quote_literal(value)}::text") == value
    finally:
        await conn.close()
