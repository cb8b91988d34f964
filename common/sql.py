"""Quoting of SQL identifiers: the only way a name enters SQL text."""

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
