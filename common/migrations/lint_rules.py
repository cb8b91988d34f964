"""The lock-risk rules (``docs/lock-risks.md``) and the findings that need no context: what
an added column, a type change or a unique constraint does to an existing table.

``common.migrations.lint`` walks a version and decides, with its context, which apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pglast import ast
from pglast.enums import AlterTableType, ConstrType

from models.lint import LockRiskSeverity

ERROR, WARNING = LockRiskSeverity.ERROR, LockRiskSeverity.WARNING
NO_TRANSACTION_ADVICE = (
    "in a version of its own marked '-- tenantflow:no-transaction' (CONCURRENTLY cannot run "
    "inside the transaction a version runs in)"
)


@dataclass(frozen=True)
class Rule:
    """A lock-risk rule: its id, how bad it is, and what it looks for (one line)."""

    id: str
    severity: LockRiskSeverity
    summary: str


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in (
        Rule("require-concurrent-index-creation", ERROR, "CREATE INDEX without CONCURRENTLY"),
        Rule("require-concurrent-index-deletion", WARNING, "DROP INDEX without CONCURRENTLY"),
        Rule("require-concurrent-reindex", ERROR, "REINDEX without CONCURRENTLY"),
        Rule("concurrently-in-transaction", ERROR, "CONCURRENTLY in a transactional version"),
        Rule("adding-not-nullable-field", ERROR, "ADD COLUMN ... NOT NULL without a default"),
        Rule("setting-not-nullable-field", ERROR, "ALTER COLUMN ... SET NOT NULL"),
        Rule("adding-field-with-volatile-default", ERROR, "ADD COLUMN that rewrites the table"),
        Rule("changing-column-type", ERROR, "ALTER COLUMN ... TYPE"),
        Rule("adding-foreign-key-constraint", ERROR, "ADD FOREIGN KEY without NOT VALID"),
        Rule("constraint-missing-not-valid", ERROR, "ADD CHECK without NOT VALID"),
        Rule("validate-in-same-transaction", ERROR, "VALIDATE right after ADD ... NOT VALID"),
        Rule("disallowed-unique-constraint", ERROR, "ADD UNIQUE/PRIMARY KEY without USING INDEX"),
        Rule("rewriting-table", ERROR, "VACUUM FULL, CLUSTER, SET TABLESPACE, SET [UN]LOGGED"),
        Rule("renaming-column", WARNING, "RENAME COLUMN"),
        Rule("renaming-table", WARNING, "ALTER TABLE ... RENAME TO"),
        Rule("ban-drop-column", WARNING, "DROP COLUMN"),
        Rule("ban-drop-table", WARNING, "DROP TABLE"),
        Rule("require-lock-timeout", WARNING, "a strong lock with lock_timeout off"),
    )
}

# Functions whose value differs per row: a default calling one is computed for every existing
# row, rewriting the table. Stable and immutable ones are computed once (PostgreSQL 11+).
VOLATILE_FUNCTIONS = _words(
    "random random_normal gen_random_uuid uuidv4 uuidv7 uuid_generate_v1 "
    "uuid_generate_v1mc uuid_generate_v4 clock_timestamp timeofday nextval setval lastval "
    "currval txid_current pg_current_xact_id"
)
# Common non-volatile functions in defaults; any other function is reported as unknown.
NON_VOLATILE_FUNCTIONS = _words(
    "now transaction_timestamp statement_timestamp current_setting current_date "
    "date_trunc make_interval timezone to_jsonb to_json jsonb_build_object "
    "json_build_object jsonb_build_array json_build_array array_fill lower upper concat "
    "length abs md5 to_char to_timestamp"
)
_SERIAL_TYPES = frozenset({"serial", "bigserial", "smallserial", "serial2", "serial4", "serial8"})
_UNBOUNDED_TEXT = frozenset({"text", "varchar", "citext"})
REWRITES = {
    AlterTableType.AT_SetTableSpace: "SET TABLESPACE",
    AlterTableType.AT_SetLogged: "SET LOGGED",
    AlterTableType.AT_SetUnLogged: "SET UNLOGGED",
}
# ALTER TABLE subcommands whose lock (SHARE UPDATE EXCLUSIVE) lets reads and writes through.
LIGHT_SUBCOMMANDS = frozenset(
    {
        AlterTableType.AT_ValidateConstraint,
        AlterTableType.AT_SetStatistics,
        AlterTableType.AT_SetOptions,
        AlterTableType.AT_ResetOptions,
        AlterTableType.AT_SetRelOptions,
        AlterTableType.AT_ResetRelOptions,
        AlterTableType.AT_ClusterOn,
        AlterTableType.AT_DropCluster,
    }
)
TableKey = tuple[str | None, str]


def table_key(relation: ast.RangeVar | None) -> TableKey | None:
    """(schema or None, table) of a relation in the parse tree."""
    if relation is None or not relation.relname:
        return None
    return (relation.schemaname, relation.relname)


def name_key(names: Iterable[ast.Node]) -> TableKey | None:
    """``schema.table`` as the parser gives a dropped object's name (a list of strings)."""
    parts = [part.sval for part in names if isinstance(part, ast.String) and part.sval]
    if not parts:
        return None
    return (parts[-2] if len(parts) > 1 else None, parts[-1])


def same_table(a: TableKey, b: TableKey) -> bool:
    """Whether two names may be one table: search_path decides an unqualified name, so it is
    taken to be in the other name's schema."""
    return a[1] == b[1] and (a[0] is None or b[0] is None or a[0] == b[0])


@dataclass(frozen=True)
class Finding:
    """What a rule found in a statement (its line and text are added by the lint)."""

    rule: str
    message: str
    advice: str
    severity: LockRiskSeverity | None = None  # the rule's, unless a finding is milder


# rule -> (message, advice); ``{fields}`` are filled by ``finding``.
TEMPLATES: dict[str, tuple[str, str]] = {
    "require-concurrent-index-creation": (
        "CREATE INDEX without CONCURRENTLY blocks every write to the table (SHARE lock) until "
        "the index is built",
        "{where}; if a build fails, tenantflow drops the INVALID index and builds it again on "
        "retry",
    ),
    "require-concurrent-index-deletion": (
        "DROP INDEX without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on the index's table: "
        "reads and writes wait for it, and it waits for them",
        f"use DROP INDEX CONCURRENTLY {NO_TRANSACTION_ADVICE}",
    ),
    "require-concurrent-reindex": (
        "REINDEX without CONCURRENTLY blocks writes to the table, and reads that use the "
        "index, until it is rebuilt",
        f"use REINDEX ... CONCURRENTLY {NO_TRANSACTION_ADVICE}",
    ),
    "concurrently-in-transaction": (
        "{what} cannot run inside a transaction block: the version fails (25001 "
        "active_sql_transaction)",
        "move it to a version of its own marked '-- tenantflow:no-transaction' (outside any "
        "BEGIN ... COMMIT)",
    ),
    "setting-not-nullable-field": (
        "SET NOT NULL on {column} scans the whole table under an ACCESS EXCLUSIVE lock: no "
        "reads or writes until it ends",
        "ADD CONSTRAINT ... CHECK ({column} IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT in a "
        "later version, then SET NOT NULL (PostgreSQL 12+ uses the valid check and skips the "
        "scan) and drop the check",
    ),
    "adding-foreign-key-constraint": (
        "ADD FOREIGN KEY checks every row while it blocks writes to both tables (SHARE ROW "
        "EXCLUSIVE)",
        "ADD CONSTRAINT ... FOREIGN KEY ... NOT VALID, then VALIDATE CONSTRAINT in a later "
        "version (it lets reads and writes on)",
    ),
    "constraint-missing-not-valid": (
        "ADD CHECK scans every row under an ACCESS EXCLUSIVE lock: no reads or writes until "
        "it ends",
        "ADD CONSTRAINT ... CHECK (...) NOT VALID, then VALIDATE CONSTRAINT in a later "
        "version (it lets reads and writes on)",
    ),
    "validate-in-same-transaction": (
        "VALIDATE CONSTRAINT {constraint} in the transaction that added it keeps the ADD's "
        "lock through the whole validating scan, as if NOT VALID were not there",
        "validate in a later version (its own transaction): VALIDATE takes only a SHARE UPDATE "
        "EXCLUSIVE lock, which lets reads and writes on",
    ),
    "renaming-column": (
        "renaming column {old} to {new} breaks every running query that names it",
        "add the new column, write both, backfill, move readers, then drop the old one in a "
        "later version (or keep a view with the old name)",
    ),
    "renaming-table": (
        "renaming table {old} to {new} breaks every running query that names it",
        "create the new table (or rename and leave an updatable view with the old name), move "
        "the code, then drop the old name in a later version",
    ),
    "ban-drop-column": (
        "DROP COLUMN {column}: running code that selects or writes it fails at once, and its "
        "data is gone",
        "stop using the column in a release first (ORMs: mark it ignored), then drop it in a "
        "later version",
    ),
    "ban-drop-table": (
        "DROP TABLE {tables}: code still running against the table fails at once, and its "
        "data is gone",
        "stop reading and writing the table in a release first, then drop it in a later "
        "version (or rename it aside and drop it once nothing complained)",
    ),
    "require-lock-timeout": (
        "{what} while {why}: waiting behind a long transaction, it holds every later query on "
        "the table in the queue behind it",
        "{how} lock_timeout = '5s' at the top of the version, or run with lock_timeout_ms "
        "above 0 (tenantflow retries a lock timeout with backoff)",
    ),
}


def finding(rule: str, **fields: object) -> Finding:
    """The finding of ``rule`` from its template, with ``fields`` filled in."""
    message, advice = TEMPLATES[rule]
    return Finding(rule, message.format(**fields), advice.format(**fields))


def rewrite(what: str) -> Finding:
    """``rewriting-table``: ``what`` rewrites the whole table."""
    return Finding(
        "rewriting-table",
        f"{what} rewrites the whole table under an ACCESS EXCLUSIVE lock: no reads or "
        "writes until it ends",
        "run it in a maintenance window, or use an online tool (pg_repack) outside migrations",
    )


def unique_without_index(kind: ConstrType) -> Finding:
    what = {ConstrType.CONSTR_PRIMARY: "PRIMARY KEY", ConstrType.CONSTR_EXCLUSION: "EXCLUDE"}
    label = what.get(kind, "UNIQUE")
    return Finding(
        "disallowed-unique-constraint",
        f"ADD {label} builds its index under an ACCESS EXCLUSIVE lock: no reads or writes "
        "until it is built",
        f"CREATE UNIQUE INDEX CONCURRENTLY {NO_TRANSACTION_ADVICE}, then ADD CONSTRAINT ... "
        f"{label} USING INDEX in a later version",
    )


def _type_of(type_name: ast.TypeName | None) -> str:
    names = [getattr(n, "sval", "") for n in (type_name.names if type_name else None) or ()]
    return names[-1].lower() if names else ""


def _calls(node: ast.Node | None) -> Iterator[str]:
    """The names of the functions an expression calls (nested ones too)."""
    if isinstance(node, ast.FuncCall):
        names = [getattr(n, "sval", "") for n in node.funcname or ()]
        yield names[-1].lower() if names else ""
    if isinstance(node, ast.Node):
        for attribute in node:
            yield from _calls_in(getattr(node, attribute))


def _calls_in(value: object) -> Iterator[str]:
    if isinstance(value, ast.Node):
        yield from _calls(value)
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _calls_in(item)


def add_column(column: ast.ColumnDef) -> list[Finding]:
    constraints = [c for c in column.constraints or () if isinstance(c, ast.Constraint)]
    kinds = {c.contype for c in constraints}
    default = next(
        (c.raw_expr for c in constraints if c.contype == ConstrType.CONSTR_DEFAULT), None
    )
    type_name = _type_of(column.typeName)
    found: list[Finding] = []
    rewrites: str | None = None
    unknown: list[str] = []
    if type_name in _SERIAL_TYPES:
        rewrites = f"{type_name} (a nextval() default)"
    elif ConstrType.CONSTR_IDENTITY in kinds:
        rewrites = "an identity column"
    elif any(
        c.contype == ConstrType.CONSTR_GENERATED and c.generated_kind != "v" for c in constraints
    ):
        rewrites = "a stored generated column"
    elif default is not None:
        calls = set(_calls(default))
        volatile = sorted(calls & VOLATILE_FUNCTIONS)
        unknown = sorted(calls - VOLATILE_FUNCTIONS - NON_VOLATILE_FUNCTIONS)
        rewrites = f"a volatile default ({', '.join(volatile)})" if volatile else None
    if rewrites is not None or unknown:
        what = rewrites or f"a default calling {', '.join(unknown)}, if volatile,"
        found.append(
            Finding(
                "adding-field-with-volatile-default",
                f"adding column {column.colname} with {what} rewrites the table and its "
                "indexes under an ACCESS EXCLUSIVE lock",
                "add the column nullable without that default (or with a constant one), set "
                "the default in the same version, backfill existing rows in batches, then add "
                "NOT NULL safely",
                severity=None if rewrites else WARNING,
            )
        )
    generated = rewrites is not None and default is None
    if ConstrType.CONSTR_NOTNULL in kinds and default is None and not generated:
        found.append(
            Finding(
                "adding-not-nullable-field",
                f"adding column {column.colname} NOT NULL without a default fails on any "
                "table that has rows (existing rows would be NULL)",
                "give it a constant DEFAULT (no rewrites since PostgreSQL 11), or add it "
                "nullable, backfill, and add NOT NULL through a NOT VALID check",
            )
        )
    for kind in (ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE):
        if kind in kinds:
            found.append(unique_without_index(kind))
    return found


def column_type(command: ast.AlterTableCmd) -> Finding:
    column = command.def_ if isinstance(command.def_, ast.ColumnDef) else None
    type_name = column.typeName if column is not None else None
    target = _type_of(type_name)
    unbounded = target in _UNBOUNDED_TEXT and not (type_name and type_name.typmods)
    message = (
        f"changing the type of {command.name} to {target or 'another type'} rewrites the "
        "table and its indexes under an ACCESS EXCLUSIVE lock: no reads or writes until it ends"
    )
    if unbounded:
        message += " (unless the column is already varchar or char: those become text in place)"
    return Finding(
        "changing-column-type",
        message,
        "add a column of the new type, write both, backfill in batches, switch readers, then "
        "drop the old column in a later version",
        severity=WARNING if unbounded else None,
    )
