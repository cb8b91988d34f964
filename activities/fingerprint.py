"""A schema's fingerprint, computed from PostgreSQL's catalogs (not pg_dump): one definition per
object of the schema's own (tables, columns and types, constraints, indexes, views, functions,
triggers, enums, sequences), the ledger tables and extension members excluded, then a sha256 over
them in order. The listing names what differs between two schemas."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection

import asyncpg

from activities.ledger import LEDGER_TABLE
from common.sql import quote_ident
from models.health import SchemaFingerprint

# Objects that belong to an extension (pg_depend deptype 'e') are the extension's, not the set's.
_RELATIONS = """
SELECT c.relname, c.relkind::text FROM pg_class c
WHERE c.relnamespace = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND c.relname <> ALL($2::text[])
  AND NOT EXISTS (SELECT FROM pg_depend x WHERE x.objid = c.oid AND x.deptype = 'e')
"""
_COLUMNS = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid) AS default, a.attidentity::text, a.attgenerated::text
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE c.relnamespace = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0
  AND NOT a.attisdropped AND c.relname <> ALL($2::text[])
  AND NOT EXISTS (SELECT FROM pg_depend x WHERE x.objid = c.oid AND x.deptype = 'e')
"""
_CONSTRAINTS = """
SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) AS def
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
WHERE k.connamespace = $1 AND c.relname <> ALL($2::text[])
"""
_INDEXES = """
SELECT t.relname AS table, ic.relname, pg_get_indexdef(i.indexrelid) AS def
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
WHERE ic.relnamespace = $1 AND t.relname <> ALL($2::text[])
  AND NOT EXISTS (SELECT FROM pg_depend x WHERE x.objid = t.oid AND x.deptype = 'e')
"""
_VIEWS = """
SELECT c.relname, c.relkind::text, pg_get_viewdef(c.oid) AS def FROM pg_class c
WHERE c.relnamespace = $1 AND c.relkind IN ('v', 'm')
  AND NOT EXISTS (SELECT FROM pg_depend x WHERE x.objid = c.oid AND x.deptype = 'e')
"""
_FUNCTIONS = """
SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args,
       pg_get_functiondef(p.oid) AS def
FROM pg_proc p WHERE p.pronamespace = $1 AND p.prokind IN ('f', 'p')
  AND NOT EXISTS (SELECT FROM pg_depend x WHERE x.objid = p.oid AND x.deptype = 'e')
"""
_TRIGGERS = """
SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) AS def
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE c.relnamespace = $1 AND NOT t.tgisinternal AND c.relname <> ALL($2::text[])
"""
_ENUMS = """
SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder) AS labels
FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
WHERE t.typnamespace = $1
  AND NOT EXISTS (SELECT FROM pg_depend x WHERE x.objid = t.oid AND x.deptype = 'e')
GROUP BY t.typname
"""
_KINDS = {
    "r": "table",
    "p": "table",
    "v": "view",
    "m": "materialized view",
    "S": "sequence",
    "f": "foreign table",
}


def fingerprint_of(objects: dict[str, str]) -> str:
    """sha256 over the listing, in key order (the same objects always give the same hash)."""
    digest = hashlib.sha256()
    for key in sorted(objects):
        digest.update(f"{key}\t{objects[key]}\n".encode())
    return digest.hexdigest()


async def schema_fingerprint(
    conn: asyncpg.Connection, schema: str, ledgers: Collection[str] = (LEDGER_TABLE,)
) -> SchemaFingerprint:
    """The fingerprint of ``schema`` on ``conn`` (empty when the schema does not exist);
    ``ledgers``: the tables tenantflow keeps ledgers in (every set's), left out."""
    oid = await conn.fetchval("SELECT oid FROM pg_namespace WHERE nspname = $1", schema)
    objects: dict[str, str] = {}
    if oid is None:
        return SchemaFingerprint(hash=fingerprint_of(objects), objects=objects)
    # Definitions name the schema (quoted or not); a schema-per-tenant target compares with a
    # reference built in another schema, so the name goes.
    qualified = re.compile(
        rf'(?<![\w"$]){re.escape(quote_ident(schema))}\.|(?<![\w"$]){re.escape(schema)}\.'
    )

    excluded = sorted({LEDGER_TABLE, *ledgers})

    def clean(text: str | None) -> str:
        return " ".join(qualified.sub("", text or "").split())

    for r in await conn.fetch(_RELATIONS, oid, excluded):
        objects[f"{_KINDS[r['relkind']]} {r['relname']}"] = "exists"
    for r in await conn.fetch(_COLUMNS, oid, excluded):
        parts = [r["type"]]
        if r["attnotnull"]:
            parts.append("not null")
        if r["default"] is not None:
            parts.append(f"default {r['default']}")
        if r["attidentity"]:
            parts.append(f"identity {r['attidentity']}")
        if r["attgenerated"]:
            parts.append(f"generated {r['attgenerated']}")
        objects[f"table {r['relname']}: column {r['attname']}"] = clean(" ".join(parts))
    for r in await conn.fetch(_CONSTRAINTS, oid, excluded):
        objects[f"table {r['relname']}: constraint {r['conname']}"] = clean(r["def"])
    for r in await conn.fetch(_INDEXES, oid, excluded):
        objects[f"table {r['table']}: index {r['relname']}"] = clean(r["def"])
    for r in await conn.fetch(_VIEWS, oid):
        objects[f"{_KINDS[r['relkind']]} {r['relname']}"] = clean(r["def"])
    for r in await conn.fetch(_FUNCTIONS, oid):
        objects[f"function {r['proname']}({r['args']})"] = clean(r["def"])
    for r in await conn.fetch(_TRIGGERS, oid, excluded):
        objects[f"table {r['relname']}: trigger {r['tgname']}"] = clean(r["def"])
    for r in await conn.fetch(_ENUMS, oid):
        objects[f"enum {r['typname']}"] = ", ".join(r["labels"])
    return SchemaFingerprint(hash=fingerprint_of(objects), objects=objects)


def differences(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    """What ``actual`` has that ``expected`` lacks, and the reverse, one line per object
    (``table orders: column note added``), in key order."""
    found: list[str] = []
    for key in sorted({*expected, *actual}):
        if key not in expected:
            found.append(f"{key} added")
        elif key not in actual:
            found.append(f"{key} missing")
        elif expected[key] != actual[key]:
            found.append(f"{key} changed: {expected[key][:120]!r} -> {actual[key][:120]!r}")
    return found
