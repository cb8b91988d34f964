"""Quoting of SQL identifiers and literals: the only way a name or value enters SQL text."""

from __future__ import annotations

from common.errors import InvalidInput
from models.identifiers import check_identifier


def quote_ident(name: str) -> str:
    """``"name"`` after checking it against the identifier rule (raises ``InvalidInput``)."""
    try:
        check_identifier(name)
    except ValueError as exc:
        raise InvalidInput(f"invalid SQL identifier: {exc}", details={"identifier": name}) from None
    # The rule admits no double quote, but doubling keeps the helper correct on its own.
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """``'value'`` as a standard-conforming string literal, for text sent without parameters.

    Only for the engine's own simple-query messages (ledger values, lock keys); the session runs
    with ``standard_conforming_strings = on``, so a backslash is an ordinary character and only
    the quote needs doubling. NUL cannot appear in PostgreSQL text and is refused.
    """
    if "\x00" in value:
        raise InvalidInput("text for SQL must not contain NUL characters")
    return "'" + value.replace("'", "''") + "'"
