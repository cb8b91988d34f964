"""The lock-risk lint: each rule fires on its example and stays quiet on the safe form, context
(tables made in the version, lock_timeout, no-transaction) decides, and every rule is documented."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from pglast import ast

from common.migrations import lint
from common.migrations.lint import LintCache, lint_set, lint_sql
from common.migrations.lint_rules import RULES, name_key, table_key
from models.lint import LockRiskSeverity
from models.migrations import Migration

DOC = Path(__file__).resolve().parents[3] / "docs" / "lock-risks.md"

# rule -> (example that fires, the safe form, options for both); "safe" options override them
# for the safe form.
CASES: dict[str, tuple[str, str, dict[str, object]]] = {
    "require-concurrent-index-creation": (
        "CREATE INDEX orders_customer ON orders (customer_id);",
        "CREATE INDEX CONCURRENTLY orders_customer ON orders (customer_id);",
        {"no_transaction": True},
    ),
    "require-concurrent-index-deletion": (
        "DROP INDEX orders_customer;",
        "DROP INDEX CONCURRENTLY orders_customer;",
        {"no_transaction": True},
    ),
    "require-concurrent-reindex": (
        "REINDEX INDEX orders_customer;",
        "REINDEX INDEX CONCURRENTLY orders_customer;",
        {"no_transaction": True},
    ),
    "concurrently-in-transaction": (
        "CREATE INDEX CONCURRENTLY orders_customer ON orders (customer_id);",
        "CREATE INDEX CONCURRENTLY orders_customer ON orders (customer_id);",
        {"no_transaction": False, "safe": {"no_transaction": True}},
    ),
    "adding-not-nullable-field": (
        "ALTER TABLE orders ADD COLUMN status text NOT NULL;",
        "ALTER TABLE orders ADD COLUMN status text NOT NULL DEFAULT 'pending';",
        {},
    ),
    "setting-not-nullable-field": (
        "ALTER TABLE orders ALTER COLUMN status SET NOT NULL;",
        "ALTER TABLE orders ADD CONSTRAINT status_not_null CHECK (status IS NOT NULL) NOT VALID;",
        {},
    ),
    "adding-field-with-volatile-default": (
        "ALTER TABLE orders ADD COLUMN token uuid DEFAULT gen_random_uuid();",
        "ALTER TABLE orders ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();",
        {},
    ),
    "changing-column-type": (
        "ALTER TABLE orders ALTER COLUMN total TYPE bigint;",
        "ALTER TABLE orders ADD COLUMN total_big bigint;",
        {},
    ),
    "adding-foreign-key-constraint": (
        "ALTER TABLE orders ADD CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id) "
        "REFERENCES customers (id);",
        "ALTER TABLE orders ADD CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id) "
        "REFERENCES customers (id) NOT VALID;",
        {},
    ),
    "constraint-missing-not-valid": (
        "ALTER TABLE orders ADD CONSTRAINT positive CHECK (total >= 0);",
        "ALTER TABLE orders ADD CONSTRAINT positive CHECK (total >= 0) NOT VALID;",
        {},
    ),
    "validate-in-same-transaction": (
        "ALTER TABLE orders ADD CONSTRAINT positive CHECK (total >= 0) NOT VALID;\n"
        "ALTER TABLE orders VALIDATE CONSTRAINT positive;",
        "ALTER TABLE orders VALIDATE CONSTRAINT positive;",
        {},
    ),
    "disallowed-unique-constraint": (
        "ALTER TABLE orders ADD CONSTRAINT orders_number_key UNIQUE (number);",
        "ALTER TABLE orders ADD CONSTRAINT orders_number_key UNIQUE USING INDEX orders_number;",
        {},
    ),
    "rewriting-table": (
        "ALTER TABLE orders SET TABLESPACE fast;",
        "ALTER TABLE orders SET (fillfactor = 90);",
        {},
    ),
    "renaming-column": (
        "ALTER TABLE customers RENAME COLUMN full_name TO display_name;",
        "ALTER TABLE customers ADD COLUMN display_name text;",
        {},
    ),
    "renaming-table": (
        "ALTER TABLE customers RENAME TO clients;",
        "CREATE TABLE clients (id bigint PRIMARY KEY);",
        {},
    ),
    "ban-drop-column": (
        "ALTER TABLE customers DROP COLUMN legacy;",
        "ALTER TABLE customers ALTER COLUMN legacy DROP NOT NULL;",
        {},
    ),
    "ban-drop-table": (
        "DROP TABLE customers;",
        "CREATE TABLE scratch (id int);\nDROP TABLE scratch;",
        {},
    ),
    "require-lock-timeout": (
        "ALTER TABLE orders ADD COLUMN note text;",
        "SET LOCAL lock_timeout = '2s';\nALTER TABLE orders ADD COLUMN note text;",
        {"lock_timeout_ms": 0},
    ),
}


def rules_of(sql: str, **options: object) -> list[str]:
    options.pop("safe", None)
    return [risk.rule for risk in lint_sql(sql, **options)]  # type: ignore[arg-type]


def test_every_rule_has_a_case() -> None:
    assert sorted(CASES) == sorted(RULES)


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_fires_on_its_example(rule: str) -> None:
    example, _, options = CASES[rule]
    assert rule in rules_of(example, **options)


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_stays_quiet_on_the_safe_form(rule: str) -> None:
    _, safe, options = CASES[rule]
    overrides = options.get("safe")
    assert rules_of(safe, **{**options, **(overrides if isinstance(overrides, dict) else {})}) == []


def test_every_rule_has_its_line_in_the_docs() -> None:
    rows = re.findall(r"^\| `([a-z-]+)` \| (error|warning) \|", DOC.read_text(), re.MULTILINE)
    documented = dict(rows)
    assert documented == {rule.id: rule.severity.value for rule in RULES.values()}


def test_a_finding_has_its_rule_severity_message_advice_and_line() -> None:
    sql = (
        "-- the orders\nCREATE TABLE t (id int);\n\n"
        "CREATE INDEX orders_customer\n  ON orders (customer_id);"
    )
    (risk,) = lint_sql(sql)
    assert risk.rule == "require-concurrent-index-creation"
    assert risk.severity is LockRiskSeverity.ERROR
    assert risk.line == 4
    assert "blocks every write" in risk.message
    assert "-- tenantflow:no-transaction" in risk.advice  # CONCURRENTLY needs its own version
    assert risk.statement == "CREATE INDEX orders_customer ON orders (customer_id)"


def test_advice_in_a_no_transaction_version_is_just_concurrently() -> None:
    (risk,) = lint_sql("CREATE INDEX i ON orders (a);", no_transaction=True)
    assert risk.advice.startswith("add CONCURRENTLY")


def test_tables_created_earlier_in_the_version_are_not_busy() -> None:
    sql = """
        CREATE TABLE app.orders (id bigint, customer_id bigint, total int);
        CREATE INDEX orders_customer ON orders (customer_id);
        ALTER TABLE orders ADD COLUMN status text NOT NULL;
        ALTER TABLE app.orders ALTER COLUMN total TYPE bigint;
        ALTER TABLE orders ADD CONSTRAINT positive CHECK (total >= 0);
        ALTER TABLE orders ADD CONSTRAINT orders_pk PRIMARY KEY (id);
        ALTER TABLE orders RENAME COLUMN total TO total_cents;
        CREATE TABLE copy AS SELECT * FROM orders;
        CREATE INDEX copy_id ON copy (id);
    """
    assert rules_of(sql, lock_timeout_ms=0) == []
    # The same table in another schema is another table.
    assert rules_of("CREATE TABLE a.t (x int); CREATE INDEX i ON b.t (x);") == [
        "require-concurrent-index-creation"
    ]
    # A table created after the statement does not count.
    assert rules_of("CREATE INDEX i ON t (x); CREATE TABLE t (x int);") == [
        "require-concurrent-index-creation"
    ]


def test_an_index_made_in_the_version_may_be_dropped_in_it() -> None:
    sql = "CREATE INDEX i ON orders (a); DROP INDEX i;"
    assert rules_of(sql, no_transaction=True) == ["require-concurrent-index-creation"]


def test_lock_timeout_follows_the_run_and_the_version() -> None:
    alter = "ALTER TABLE orders ADD COLUMN note text;"
    assert rules_of(alter) == []  # the run's 5000 ms covers it
    assert rules_of(alter, lock_timeout_ms=0) == ["require-lock-timeout"]
    assert rules_of(f"SET lock_timeout = '3s'; {alter}", lock_timeout_ms=0) == []
    assert (
        rules_of(f"SELECT set_config('lock_timeout', '3s', true); {alter}", lock_timeout_ms=0) == []
    )
    turned_off = lint_sql(f"SET lock_timeout = 0; {alter}")
    assert [r.rule for r in turned_off] == ["require-lock-timeout"]
    assert "this version set lock_timeout to 0" in turned_off[0].message
    assert rules_of(f"SET lock_timeout = 0; RESET lock_timeout; {alter}") == []
    # Once per version, at the first statement that needs it.
    twice = lint_sql(f"SELECT 1;\n{alter}\n{alter}", lock_timeout_ms=0)
    assert [(r.rule, r.line) for r in twice] == [("require-lock-timeout", 2)]
    # Light locks (VALIDATE, SET STATISTICS) and new tables do not need it.
    assert rules_of("ALTER TABLE orders VALIDATE CONSTRAINT c;", lock_timeout_ms=0) == []
    assert (
        rules_of("CREATE TABLE n (id int); ALTER TABLE n ADD COLUMN x int;", lock_timeout_ms=0)
        == []
    )
    # A foreign key of a new table locks the existing table it references.
    assert rules_of("CREATE TABLE n (c bigint REFERENCES customers);", lock_timeout_ms=0) == [
        "require-lock-timeout"
    ]


def test_set_local_does_nothing_outside_a_transaction() -> None:
    sql = "SET LOCAL lock_timeout = '2s';\nALTER TABLE orders ADD COLUMN note text;"
    assert rules_of(sql, no_transaction=True, lock_timeout_ms=0) == ["require-lock-timeout"]
    inside = (
        "BEGIN;\nSET LOCAL lock_timeout = '2s';\nALTER TABLE orders ADD COLUMN note text;\nCOMMIT;"
    )
    assert rules_of(inside, no_transaction=True, lock_timeout_ms=0) == []
    after = inside + "\nALTER TABLE orders ADD COLUMN other text;"
    assert rules_of(after, no_transaction=True, lock_timeout_ms=0) == ["require-lock-timeout"]


def test_concurrently_inside_begin_of_a_no_transaction_version() -> None:
    sql = "BEGIN;\nCREATE INDEX CONCURRENTLY i ON orders (a);\nCOMMIT;"
    assert rules_of(sql, no_transaction=True) == ["concurrently-in-transaction"]


def test_validate_in_a_later_no_transaction_statement_is_fine() -> None:
    sql = (
        "ALTER TABLE orders ADD CONSTRAINT positive CHECK (total >= 0) NOT VALID;\n"
        "ALTER TABLE orders VALIDATE CONSTRAINT positive;"
    )
    assert rules_of(sql, no_transaction=True) == []


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        ("id bigserial", [("adding-field-with-volatile-default", "error")]),
        ("id int GENERATED ALWAYS AS IDENTITY", [("adding-field-with-volatile-default", "error")]),
        (
            "d int GENERATED ALWAYS AS (total * 2) STORED",
            [("adding-field-with-volatile-default", "error")],
        ),
        ("d int GENERATED ALWAYS AS (total * 2) VIRTUAL", []),
        (
            "t timestamptz DEFAULT clock_timestamp()",
            [("adding-field-with-volatile-default", "error")],
        ),
        ("t timestamptz DEFAULT now() + interval '1 day'", []),
        ("t timestamptz DEFAULT CURRENT_TIMESTAMP", []),
        ("x int DEFAULT my_function()", [("adding-field-with-volatile-default", "warning")]),
        ("x int NOT NULL DEFAULT 0", []),
        (
            "id bigserial PRIMARY KEY",
            [
                ("adding-field-with-volatile-default", "error"),
                ("disallowed-unique-constraint", "error"),
            ],
        ),
    ],
)
def test_columns_that_rewrite(column: str, expected: list[tuple[str, str]]) -> None:
    found = lint_sql(f"ALTER TABLE orders ADD COLUMN {column};")
    assert [(r.rule, r.severity.value) for r in found] == expected


def test_a_type_change_to_text_is_a_warning() -> None:
    (risk,) = lint_sql("ALTER TABLE orders ALTER COLUMN note TYPE text;")
    assert (risk.rule, risk.severity) == ("changing-column-type", LockRiskSeverity.WARNING)
    (risk,) = lint_sql("ALTER TABLE orders ALTER COLUMN note TYPE varchar(20);")
    assert risk.severity is LockRiskSeverity.ERROR


def test_found_on_the_parse_tree_not_the_text() -> None:
    sql = """
        -- CREATE INDEX i ON orders (a);
        COMMENT ON TABLE orders IS 'CREATE INDEX i ON orders (a); DROP TABLE orders;';
        CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ SELECT 1 $$;
        INSERT INTO notes VALUES ('ALTER TABLE orders ADD COLUMN x int NOT NULL');
    """
    assert rules_of(sql) == []


def test_sql_the_parser_refuses_has_no_findings() -> None:
    assert lint_sql("CREATE INDEX ON ;;; nonsense") == []


def test_an_ignore_comment_silences_a_rule_for_its_statement() -> None:
    sql = (
        "-- tenantflow:lint-ignore require-concurrent-index-creation\n"
        "CREATE INDEX small ON lookup (code);\n"
        "CREATE INDEX big ON orders (customer_id);\n"
        "ALTER TABLE orders DROP COLUMN a; -- tenantflow:lint-ignore ban-drop-column\n"
        "ALTER TABLE orders DROP COLUMN b; "
        "-- tenantflow:lint-ignore ban-drop-column, renaming-table"
    )
    found = [(r.rule, r.line) for r in lint_sql(sql)]
    # A trailing comment belongs to the statement after it; the last one has none after it.
    assert found == [
        ("require-concurrent-index-creation", 3),
        ("ban-drop-column", 4),
    ]


def _migration(version: str, up: str, down: str | None = None, **extra: object) -> Migration:
    return Migration.model_validate(
        {
            "version": version,
            "description": f"step {version}",
            "up_sql": up,
            "down_sql": down,
            "checksum": hashlib.sha256(up.encode()).hexdigest(),
            **extra,
        }
    )


def test_the_cache_lints_a_version_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = lint.lint_sql

    def counting(sql: str, **options: object) -> object:
        calls.append(sql)
        return real(sql, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(lint, "lint_sql", counting)
    cache = LintCache()
    version = _migration("2", "CREATE INDEX i ON orders (a);", "DROP INDEX i;")
    first = cache.lint("core", version)
    for _ in range(50):
        assert cache.lint("core", version) == first
    assert len(calls) == 1
    cache.lint("core", version, down=True)
    cache.lint("core", version, lock_timeout_ms=0)
    cache.lint("other", version)
    assert len(calls) == 4
    # A finding handed out is a copy: changing it changes nothing cached.
    first[0].message = "changed"
    assert cache.lint("core", version)[0].message != "changed"


def test_lint_set_counts_and_leaves_withdrawn_versions_out() -> None:
    versions = [
        _migration("1", "CREATE TABLE t (a int); CREATE INDEX i ON t (a);", "DROP TABLE t;"),
        _migration("2", "CREATE INDEX j ON t (a);", "DROP INDEX j;"),
        _migration("3", "ALTER TABLE t RENAME COLUMN a TO b;"),
        _migration("4", "ALTER TABLE t DROP COLUMN b;", withdrawn=True),
    ]
    up = lint_set("demo", versions, cache=LintCache())
    assert [v.version for v in up.versions] == ["1", "2", "3"]
    assert (up.errors, up.warnings) == (1, 1)
    assert [r.rule for r in up.versions[1].warnings] == ["require-concurrent-index-creation"]
    down = lint_set("demo", versions, down=True, cache=LintCache())
    assert down.direction == "down"
    assert [v.version for v in down.versions] == ["1", "2"]  # 3 has no down script
    assert [r.rule for v in down.versions for r in v.warnings] == [
        "ban-drop-table",
        "require-concurrent-index-deletion",
    ]


ALTER = "ALTER TABLE orders ADD COLUMN note text;"


@pytest.mark.parametrize(
    "before",
    [
        "SAVEPOINT s;",  # neither BEGIN nor COMMIT: the transaction goes on
        "SET lock_timeout = '2s'; RESET ALL;",  # RESET ALL is back to the run's 0
        "SET statement_timeout = '2s';",  # another setting
        "SELECT set_config('search_path', 'app', true);",  # set_config of another setting
    ],
)
def test_what_does_not_turn_the_lock_timeout_on(before: str) -> None:
    assert rules_of(f"{before} {ALTER}", lock_timeout_ms=0) == ["require-lock-timeout"]


def test_a_plain_set_outside_a_transaction_covers_the_rest_of_the_version() -> None:
    assert (
        rules_of(f"SET lock_timeout = '2s';\n{ALTER}", lock_timeout_ms=0, no_transaction=True) == []
    )
    # A SET inside BEGIN..COMMIT of a no-transaction version outlives the COMMIT (session-wide).
    sql = f"BEGIN; SET lock_timeout = '1s'; COMMIT; {ALTER}"
    assert rules_of(sql, lock_timeout_ms=0, no_transaction=True) == []


def test_select_into_creates_a_table_that_is_not_busy() -> None:
    assert rules_of("SELECT * INTO copy FROM orders; CREATE INDEX i ON copy (a);") == []


def test_an_unnamed_index_on_a_busy_table_still_needs_concurrently() -> None:
    assert rules_of("CREATE INDEX ON orders (a);") == ["require-concurrent-index-creation"]


@pytest.mark.parametrize(
    "sql",
    [
        "DROP VIEW v;",
        "ALTER INDEX i RENAME TO j;",
        "ALTER INDEX i SET (fillfactor = 50);",
        "VACUUM orders;",
    ],
)
def test_statements_on_other_objects_are_quiet(sql: str) -> None:
    assert rules_of(sql, lock_timeout_ms=0) == []


@pytest.mark.parametrize(
    ("busy", "new"),
    [
        ("CLUSTER orders USING i;", "CREATE TABLE n (a int); CLUSTER n USING i;"),
        ("VACUUM FULL orders;", "VACUUM orders;"),
    ],
)
def test_rewrites_of_a_busy_table(busy: str, new: str) -> None:
    (risk,) = lint_sql(busy)
    assert risk.rule == "rewriting-table"
    assert busy.split()[0] in risk.message
    assert rules_of(new) == []


@pytest.mark.parametrize(
    ("busy", "new"),
    [
        ("LOCK TABLE orders;", None),
        ("TRUNCATE orders;", "CREATE TABLE n (a int); TRUNCATE n;"),
        (
            "CREATE TRIGGER t BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION f();",
            "CREATE TABLE n (a int); "
            "CREATE TRIGGER t BEFORE INSERT ON n FOR EACH ROW EXECUTE FUNCTION f();",
        ),
    ],
)
def test_strong_locks_need_a_lock_timeout(busy: str, new: str | None) -> None:
    (risk,) = lint_sql(busy, lock_timeout_ms=0)
    assert risk.rule == "require-lock-timeout"
    assert "the run's lock_timeout_ms is 0" in risk.message
    assert rules_of(busy) == []  # the run's 5000 ms covers it
    if new is not None:
        assert rules_of(new, lock_timeout_ms=0) == []


def test_a_not_null_constraint_is_not_a_validation_risk() -> None:
    sql = "ALTER TABLE orders ADD CONSTRAINT nn NOT NULL total;"
    assert rules_of(sql, lock_timeout_ms=0) == ["require-lock-timeout"]
    assert rules_of(sql) == []


def test_a_comment_that_is_not_an_ignore_silences_nothing() -> None:
    found = lint_sql("-- just a note about lint-ignore\nCREATE INDEX i ON orders (a);")
    assert [(r.rule, r.line) for r in found] == [("require-concurrent-index-creation", 2)]


def test_the_cache_forgets_the_least_recently_used_version(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = lint.lint_sql

    def counting(sql: str, **options: object) -> object:
        calls.append(sql)
        return real(sql, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(lint, "lint_sql", counting)
    cache = LintCache(size=1)
    one = _migration("1", "CREATE INDEX i ON orders (a);")
    two = _migration("2", "DROP TABLE orders;")
    cache.lint("core", one)
    cache.lint("core", two)  # evicts 1
    assert [r.rule for r in cache.lint("core", two)] == ["ban-drop-table"]
    assert len(calls) == 2
    assert [r.rule for r in cache.lint("core", one)] == ["require-concurrent-index-creation"]
    assert len(calls) == 3


def test_an_ignore_comment_inside_a_statement_silences_that_statement() -> None:
    sql = (
        "CREATE INDEX i ON orders -- tenantflow:lint-ignore require-concurrent-index-creation\n"
        "  (a);\n"
        "CREATE INDEX j ON orders (b);"
    )
    assert [(r.rule, r.line) for r in lint_sql(sql)] == [("require-concurrent-index-creation", 3)]


def test_the_cache_lints_as_told_when_the_caller_says_how_the_script_runs() -> None:
    cache = LintCache()
    version = _migration("5", "CREATE INDEX CONCURRENTLY i ON orders (a);")
    assert [r.rule for r in cache.lint("core", version)] == ["concurrently-in-transaction"]
    assert cache.lint("core", version, no_transaction=True) == []


def test_names_the_parser_leaves_out_are_no_table() -> None:
    assert table_key(None) is None
    assert table_key(ast.RangeVar(relname="")) is None
    assert table_key(ast.RangeVar(schemaname="app", relname="orders")) == ("app", "orders")
    assert name_key([]) is None
    assert name_key([ast.Integer(ival=1)]) is None
    assert name_key([ast.String(sval="app"), ast.String(sval="orders")]) == ("app", "orders")
    assert name_key([ast.String(sval="orders")]) == (None, "orders")
