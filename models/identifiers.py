"""The one rule every SQL identifier (database, schema, role name) must follow.

Identifiers reach SQL only through ``common.sql.quote_ident``; everything else is a parameter.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

# Letters, digits, underscore and hyphen, starting with a letter or underscore, at most 63 bytes
# (PostgreSQL's NAMEDATALEN - 1). No quotes, dots, spaces or NUL can ever appear.
IDENTIFIER_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")
RESERVED_PREFIXES = ("pg_",)


def check_identifier(value: str) -> str:
    """Return ``value`` if it is an acceptable identifier, else raise ``ValueError``."""
    if not IDENTIFIER_PATTERN.fullmatch(value):
        raise ValueError(
            "must be 1-63 characters of letters, digits, '_' or '-', starting with a letter or '_'"
        )
    if value.lower().startswith(RESERVED_PREFIXES):
        raise ValueError("names starting with 'pg_' are reserved by PostgreSQL")
    return value


Identifier = Annotated[str, AfterValidator(check_identifier)]
