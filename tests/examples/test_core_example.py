"""``examples/core``: well-formed, and every down script exactly undoes its up on PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg

from common.migrations.loader import load_directory
from models.migrations import Migration, MigrationFormat

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "core"
_TRANSACTION_CONTROL = re.compile(
    r"^\s*(BEGIN|COMMIT|ROLLBACK|START\s+TRANSACTION|END|SAVEPOINT)\b", re.IGNORECASE | re.MULTILINE
)

# Everything a migration can leave behind in a database, as comparable rows. Objects are named,
# never identified by OID, so a rolled-back database compares equal to the one before.
_CATALOG: dict[str, str] = {
    "schemas": """
        SELECT nspname FROM pg_namespace
         WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'""",
    "relations (pg_class)": """
        SELECT relname, relkind::text FROM pg_class
         WHERE relnamespace = 'public'::regnamespace""",
    "types (pg_type)": """
        SELECT typname, typtype::text FROM pg_type WHERE typnamespace = 'public'::regnamespace""",
    "enum labels": """
        SELECT t.typname, e.enumlabel, e.enumsortorder::text
          FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid
         WHERE t.typnamespace = 'public'::regnamespace""",
    "functions (pg_proc)": """
        SELECT proname, pg_get_function_identity_arguments(oid) FROM pg_proc
         WHERE pronamespace = 'public'::regnamespace""",
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull::text,
               coalesce(pg_get_expr(d.adbin, d.adrelid), ''), a.attidentity::text
          FROM pg_attribute a
          JOIN pg_class c ON c.oid = a.attrelid
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
         WHERE connamespace = 'public'::regnamespace""",
    "indexes": """
        SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'""",
    "views": """
        SELECT viewname, definition FROM pg_views WHERE schemaname = 'public'""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname FROM pg_trigger t
          JOIN pg_class c ON c.oid = t.tgrelid
         WHERE c.relnamespace = 'public'::regnamespace AND NOT t.tgisinternal""",
}


async def snapshot(conn: asyncpg.Connection) -> dict[str, list[tuple[str, ...]]]:
    """The user-visible catalog of ``conn``'s database, sorted."""
    return {
        kind: sorted(tuple(row) for row in await conn.fetch(query))
        for kind, query in _CATALOG.items()
    }


async def counts(conn: asyncpg.Connection) -> dict[str, int]:
    """Objects in schema public: relations, types, functions."""
    return {
        table: await conn.fetchval(
            f"SELECT count(*) FROM pg_{table} WHERE {column} = 'public'::regnamespace"
        )
        for table, column in (
            ("class", "relnamespace"),
            ("type", "typnamespace"),
            ("proc", "pronamespace"),
        )
    }


async def apply(conn: asyncpg.Connection, migration: Migration, sql: str) -> None:
    """One script as tenantflow runs it: in its own transaction unless marked otherwise."""
    if migration.no_transaction:
        await conn.execute(sql)
        return
    async with conn.transaction():
        await conn.execute(sql)


async def seed(conn: asyncpg.Connection) -> None:
    """Rows for the backfill (V4) to count and for the later versions to carry along."""
    await conn.execute(
        """
        INSERT INTO customers (email, full_name) VALUES
            ('ada@example.com', 'Ada Lovelace'),
            ('alan@example.com', 'Alan Turing'),
            ('grace@example.com', 'Grace Hopper');
        INSERT INTO orders (customer_id, total_cents)
            SELECT id, 1500 FROM customers WHERE email = 'ada@example.com'
            UNION ALL SELECT id, 2500 FROM customers WHERE email = 'ada@example.com'
            UNION ALL SELECT id, 900 FROM customers WHERE email = 'alan@example.com';
        INSERT INTO products (sku, price_cents) VALUES ('TEA-1', 500);
        INSERT INTO order_items (order_id, product_id, quantity, price_cents)
            SELECT o.id, p.id, 3, 500 FROM orders o, products p WHERE o.total_cents = 1500;
        """
    )


def test_the_example_is_a_flyway_set_of_at_least_six_versions_each_with_a_down() -> None:
    migrations = load_directory(EXAMPLE, MigrationFormat.FLYWAY)
    assert load_directory(EXAMPLE) == migrations  # detected as Flyway too
    assert [m.version for m in migrations] == [str(n) for n in range(1, len(migrations) + 1)]
    assert len(migrations) >= 6
    for m in migrations:
        assert m.down_sql, f"{m.source} has no U script"
        assert m.description
        assert not m.no_transaction


def test_the_example_scripts_leave_transactions_to_tenantflow_and_need_no_extensions() -> None:
    for path in sorted(EXAMPLE.glob("*.sql")):
        text = path.read_text("utf-8")
        assert not _TRANSACTION_CONTROL.search(text), path.name
        assert "extension" not in text.lower(), path.name


async def test_every_down_exactly_undoes_its_up_and_rollback_to_zero_leaves_nothing(
    fresh_database: str,
) -> None:
    migrations = load_directory(EXAMPLE)
    conn = await asyncpg.connect(fresh_database)
    try:
        empty_counts = await counts(conn)
        before: list[dict[str, list[tuple[str, ...]]]] = []
        for migration in migrations:
            before.append(await snapshot(conn))
            await apply(conn, migration, migration.up_sql)
            if migration.version == "3":
                await seed(conn)
            assert await snapshot(conn) != before[-1], f"{migration.source} changed nothing"

        # Everything the set creates is there, and the backfill counted the seeded orders.
        assert await conn.fetchval("SELECT to_regclass('public.order_items') IS NOT NULL")
        assert await conn.fetchval("SELECT to_regtype('public.order_status') IS NOT NULL")
        summaries = await conn.fetch(
            "SELECT display_name, order_count, lifetime_cents FROM customer_summaries ORDER BY id"
        )
        assert [tuple(row) for row in summaries] == [
            ("Ada Lovelace", 2, 4000),
            ("Alan Turing", 1, 900),
            ("Grace Hopper", 0, 0),
        ]
        statuses = await conn.fetch("SELECT DISTINCT status::text FROM orders")
        assert [row[0] for row in statuses] == ["pending"]
        assert await conn.fetchval(
            "SELECT attnotnull FROM pg_attribute"
            " WHERE attrelid = 'customers'::regclass AND attname = 'order_count'"
        )

        for migration, expected in zip(reversed(migrations), reversed(before), strict=True):
            assert migration.down_sql is not None
            await apply(conn, migration, migration.down_sql)
            after = await snapshot(conn)
            assert after == expected, f"U script of {migration.source} does not undo it"

        assert await counts(conn) == empty_counts
        leftovers = await snapshot(conn)
        assert all(not rows for kind, rows in leftovers.items() if kind != "schemas"), leftovers
    finally:
        await conn.close()
