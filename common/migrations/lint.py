"""Lock-risk lint: what a version does to tables a busy database is using (in the spirit of the
squawk linter), read from PostgreSQL's own parse tree (``pglast``), never from the text.

Each rule has an id, a severity and a line in ``docs/lock-risks.md``. The lint follows a
version statement by statement, because context decides: a table created earlier in the same
version is not busy yet (nothing else can see it), ``SET lock_timeout`` earlier in the version
covers what follows, and ``CONCURRENTLY`` only works in a no-transaction version.

A comment ``-- tenantflow:lint-ignore rule-id[, rule-id]`` before a statement silences those
rules for it (for a table known to be small, say).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from pglast import ast, parse_sql
from pglast.enums import AlterTableType, ConstrType, ObjectType, VariableSetKind
from pglast.parser import ParseError, scan

from common.migrations.sql import line_at
from models.lint import LockRisk, LockRiskSeverity, SetLint, VersionLint
from models.migrations import Migration

ERROR, WARNING = LockRiskSeverity.ERROR, LockRiskSeverity.WARNING
_NO_TRANSACTION_ADVICE = (
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
_REWRITES = {
    AlterTableType.AT_SetTableSpace: "SET TABLESPACE",
    AlterTableType.AT_SetLogged: "SET LOGGED",
    AlterTableType.AT_SetUnLogged: "SET UNLOGGED",
}
# ALTER TABLE subcommands whose lock (SHARE UPDATE EXCLUSIVE) lets reads and writes through.
_LIGHT_SUBCOMMANDS = frozenset(
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
_IGNORE = re.compile(r"^--\s*tenantflow:lint-ignore\b(?P<ids>.*)$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(?P<number>\d+(?:\.\d*)?)\s*[a-z]*\s*$", re.IGNORECASE)
_SHOWN = 200

TableKey = tuple[str | None, str]


def _key(relation: ast.RangeVar | None) -> TableKey | None:
    if relation is None or not relation.relname:
        return None
    return (relation.schemaname, relation.relname)


def _name_key(names: Iterable[ast.Node]) -> TableKey | None:
    """``schema.table`` as the parser gives a dropped object's name (a list of strings)."""
    parts = [part.sval for part in names if isinstance(part, ast.String) and part.sval]
    if not parts:
        return None
    return (parts[-2] if len(parts) > 1 else None, parts[-1])


def _same(a: TableKey, b: TableKey) -> bool:
    # search_path decides an unqualified name; assume it is the schema of the other side.
    return a[1] == b[1] and (a[0] is None or b[0] is None or a[0] == b[0])


def _zero(value: ast.Node | None) -> bool:
    """Whether a ``SET lock_timeout`` value turns the timeout off (0, '0', '0s', ...)."""
    constant = getattr(value, "val", None)
    number = getattr(constant, "ival", None)
    if number is None:
        number = getattr(constant, "fval", None) or getattr(constant, "sval", None)
    match = _DURATION.match(str(number)) if number is not None else None
    return match is not None and float(match["number"]) == 0


@dataclass
class _Version:
    """What the statements so far told about the version."""

    no_transaction: bool
    run_timeout: bool  # the run's lock_timeout_ms above 0 (the session's default)
    session_timeout: bool  # lock_timeout on for the session (the run's, or a SET)
    set_off_here: bool = False  # whether this version turned it off
    local_timeout: bool | None = None  # SET LOCAL, until the transaction ends
    in_transaction: bool = True
    timeout_reported: bool = False
    created_tables: list[TableKey] = field(default_factory=list)
    created_indexes: list[TableKey] = field(default_factory=list)
    not_valid: set[tuple[str, str]] = field(default_factory=set)  # (table, constraint)

    def is_new(self, table: TableKey | None) -> bool:
        return table is not None and any(_same(table, t) for t in self.created_tables)

    @property
    def timeout_on(self) -> bool:
        return self.local_timeout if self.local_timeout is not None else self.session_timeout


@dataclass(frozen=True)
class _Finding:
    rule: str
    message: str
    advice: str
    severity: LockRiskSeverity | None = None  # the rule's, unless a finding is milder


class _Linter:
    """Walks one version's statements in order, keeping its context."""

    def __init__(self, no_transaction: bool, lock_timeout_ms: int) -> None:
        self.state = _Version(
            no_transaction=no_transaction,
            run_timeout=lock_timeout_ms > 0,
            session_timeout=lock_timeout_ms > 0,
            in_transaction=not no_transaction,
        )

    def statement(self, node: ast.Node) -> list[_Finding]:
        """The findings of one statement; updates the context after it."""
        handler = getattr(self, f"_{type(node).__name__}", None)
        found: list[_Finding] = handler(node) if handler is not None else []
        return found

    # --- context -------------------------------------------------------------------------

    def _TransactionStmt(self, node: ast.TransactionStmt) -> list[_Finding]:
        kind = int(node.kind or 0)
        if kind in (0, 1):  # BEGIN, START TRANSACTION
            self.state.in_transaction = True
        elif kind in (2, 3) and self.state.no_transaction:  # COMMIT, ROLLBACK
            self.state.in_transaction = False
            self.state.local_timeout = None
        return []

    def _VariableSetStmt(self, node: ast.VariableSetStmt) -> list[_Finding]:
        if node.kind == VariableSetKind.VAR_RESET_ALL:
            self._set_timeout(None, local=False)
        elif (node.name or "").lower() == "lock_timeout":
            if node.kind == VariableSetKind.VAR_SET_VALUE:
                on = not _zero((node.args or (None,))[0])
                self._set_timeout(on, local=bool(node.is_local))
            else:  # SET ... TO DEFAULT, RESET: back to the run's setting
                self._set_timeout(None, local=bool(node.is_local))
        return []

    def _set_timeout(self, on: bool | None, *, local: bool) -> None:
        """A ``SET [LOCAL] lock_timeout`` (``on``: whether it is above 0; None: back to the
        run's setting, as RESET and SET ... TO DEFAULT go)."""
        state = self.state
        if local:
            # SET LOCAL outside a transaction block does nothing (PostgreSQL warns and goes on).
            if state.in_transaction:
                state.local_timeout = state.run_timeout if on is None else on
            return
        if state.in_transaction:
            state.local_timeout = None  # a plain SET replaces a SET LOCAL of the transaction
        state.session_timeout = state.run_timeout if on is None else on
        state.set_off_here = on is False or (on is None and state.set_off_here)

    def _SelectStmt(self, node: ast.SelectStmt) -> list[_Finding]:
        """``SELECT set_config('lock_timeout', ..., is_local)`` counts as a SET; ``SELECT ...
        INTO`` creates a table."""
        if node.intoClause is not None:
            self._created(_key(node.intoClause.rel))
        for target in node.targetList or ():
            call = getattr(target, "val", None)
            if not isinstance(call, ast.FuncCall) or len(args := call.args or ()) != 3:
                continue
            names = [getattr(n, "sval", "") for n in call.funcname or ()]
            setting = getattr(getattr(args[0], "val", None), "sval", "")
            if names[-1:] == ["set_config"] and str(setting).lower() == "lock_timeout":
                local = getattr(getattr(args[2], "val", None), "boolval", False)
                on = not _zero(args[1])
                self._set_timeout(on, local=bool(local))
        return []

    def _created(self, table: TableKey | None) -> None:
        if table is not None:
            self.state.created_tables.append(table)

    def _CreateStmt(self, node: ast.CreateStmt) -> list[_Finding]:
        self._created(_key(node.relation))
        # A foreign key of the new table locks the table it references (SHARE ROW EXCLUSIVE).
        referenced = [
            _key(c.pktable)
            for element in node.tableElts or ()
            for c in [element, *(getattr(element, "constraints", None) or ())]
            if isinstance(c, ast.Constraint) and c.contype == ConstrType.CONSTR_FOREIGN
        ]
        if any(not self.state.is_new(t) for t in referenced):
            return self._timeout("a foreign key locks the table it references")
        return []

    def _CreateTableAsStmt(self, node: ast.CreateTableAsStmt) -> list[_Finding]:
        if node.into is not None:
            self._created(_key(node.into.rel))
        return []

    # --- rules ---------------------------------------------------------------------------

    def _timeout(self, what: str) -> list[_Finding]:
        """``require-lock-timeout``, once per version: a strong lock requested with no
        lock_timeout waits behind any long transaction, and every query on the table queues
        behind it."""
        state = self.state
        if state.timeout_on or state.timeout_reported:
            return []
        state.timeout_reported = True
        how = "SET LOCAL" if state.in_transaction else "SET"
        why = (
            "this version set lock_timeout to 0"
            if state.set_off_here or state.local_timeout is False
            else "the run's lock_timeout_ms is 0"
        )
        return [
            _Finding(
                "require-lock-timeout",
                f"{what} while {why}: waiting behind a long transaction, it "
                "holds every later query on the table in the queue behind it",
                f"{how} lock_timeout = '5s' at the top of the version, or run with "
                "lock_timeout_ms above 0 (tenantflow retries a lock timeout with backoff)",
            )
        ]

    def _IndexStmt(self, node: ast.IndexStmt) -> list[_Finding]:
        table = _key(node.relation)
        if node.idxname:
            self.state.created_indexes.append((table[0] if table else None, node.idxname))
        if node.concurrent:
            return self._concurrently_in_transaction("CREATE INDEX CONCURRENTLY")
        if self.state.is_new(table):
            return []
        where = (
            "add CONCURRENTLY"
            if self.state.no_transaction
            else f"use CREATE INDEX CONCURRENTLY {_NO_TRANSACTION_ADVICE}"
        )
        return [
            _Finding(
                "require-concurrent-index-creation",
                "CREATE INDEX without CONCURRENTLY blocks every write to the table (SHARE "
                "lock) until the index is built",
                f"{where}; if a build fails, tenantflow drops the INVALID index and builds it "
                "again on retry",
            ),
            *self._timeout("CREATE INDEX"),
        ]

    def _concurrently_in_transaction(self, what: str) -> list[_Finding]:
        if not self.state.in_transaction:
            return []
        return [
            _Finding(
                "concurrently-in-transaction",
                f"{what} cannot run inside a transaction block: the version fails "
                "(25001 active_sql_transaction)",
                "move it to a version of its own marked '-- tenantflow:no-transaction' "
                "(outside any BEGIN ... COMMIT)",
            )
        ]

    def _ReindexStmt(self, node: ast.ReindexStmt) -> list[_Finding]:
        options = {getattr(p, "defname", "") for p in node.params or ()}
        if "concurrently" in options:
            return self._concurrently_in_transaction("REINDEX CONCURRENTLY")
        return [
            _Finding(
                "require-concurrent-reindex",
                "REINDEX without CONCURRENTLY blocks writes to the table, and reads that use "
                "the index, until it is rebuilt",
                f"use REINDEX ... CONCURRENTLY {_NO_TRANSACTION_ADVICE}",
            ),
            *self._timeout("REINDEX"),
        ]

    def _DropStmt(self, node: ast.DropStmt) -> list[_Finding]:
        names = [_name_key(obj) for obj in node.objects or () if isinstance(obj, tuple | list)]
        found: list[_Finding] = []
        if node.removeType == ObjectType.OBJECT_INDEX:
            if node.concurrent:
                return self._concurrently_in_transaction("DROP INDEX CONCURRENTLY")
            created = self.state.created_indexes
            if all(n is not None and any(_same(n, c) for c in created) for n in names):
                return []
            found.append(
                _Finding(
                    "require-concurrent-index-deletion",
                    "DROP INDEX without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on the "
                    "index's table: reads and writes wait for it, and it waits for them",
                    f"use DROP INDEX CONCURRENTLY {_NO_TRANSACTION_ADVICE}",
                )
            )
            return found + self._timeout("DROP INDEX")
        if node.removeType != ObjectType.OBJECT_TABLE:
            return []
        existing = [n for n in names if not self.state.is_new(n)]
        if not existing:
            return []
        shown = ", ".join(".".join(p for p in n if p) for n in existing if n is not None)
        found.append(
            _Finding(
                "ban-drop-table",
                f"DROP TABLE {shown}: code still running against the table fails at once, "
                "and its data is gone",
                "stop reading and writing the table in a release first, then drop it in a "
                "later version (or rename it aside and drop it once nothing complained)",
            )
        )
        return found + self._timeout("DROP TABLE")

    def _RenameStmt(self, node: ast.RenameStmt) -> list[_Finding]:
        if self.state.is_new(_key(node.relation)):
            return []
        if node.renameType == ObjectType.OBJECT_COLUMN and node.relationType in (
            ObjectType.OBJECT_TABLE,
            ObjectType.OBJECT_FOREIGN_TABLE,
        ):
            finding = _Finding(
                "renaming-column",
                f"renaming column {node.subname} to {node.newname} breaks every running query "
                "that names it",
                "add the new column, write both, backfill, move readers, then drop the old "
                "one in a later version (or keep a view with the old name)",
            )
        elif node.renameType == ObjectType.OBJECT_TABLE:
            finding = _Finding(
                "renaming-table",
                f"renaming table {node.relation.relname if node.relation else ''} to "
                f"{node.newname} breaks every running query that names it",
                "create the new table (or rename and leave an updatable view with the old "
                "name), move the code, then drop the old name in a later version",
            )
        else:
            return []
        return [finding, *self._timeout("RENAME")]

    def _VacuumStmt(self, node: ast.VacuumStmt) -> list[_Finding]:
        options = {getattr(o, "defname", "") for o in node.options or ()}
        if "full" not in options:
            return []
        return [self._rewrite("VACUUM FULL")]

    def _ClusterStmt(self, node: ast.ClusterStmt) -> list[_Finding]:
        if self.state.is_new(_key(node.relation)):
            return []
        return [self._rewrite("CLUSTER")]

    @staticmethod
    def _rewrite(what: str) -> _Finding:
        return _Finding(
            "rewriting-table",
            f"{what} rewrites the whole table under an ACCESS EXCLUSIVE lock: no reads or "
            "writes until it ends",
            "run it in a maintenance window, or use an online tool (pg_repack) outside migrations",
        )

    def _LockStmt(self, node: ast.LockStmt) -> list[_Finding]:
        del node
        return self._timeout("LOCK TABLE")

    def _TruncateStmt(self, node: ast.TruncateStmt) -> list[_Finding]:
        if all(self.state.is_new(_key(r)) for r in node.relations or ()):
            return []
        return self._timeout("TRUNCATE")

    def _CreateTrigStmt(self, node: ast.CreateTrigStmt) -> list[_Finding]:
        if self.state.is_new(_key(node.relation)):
            return []
        return self._timeout("CREATE TRIGGER")

    def _AlterTableStmt(self, node: ast.AlterTableStmt) -> list[_Finding]:
        table = _key(node.relation)
        if self.state.is_new(table) or table is None:
            return []
        commands = [c for c in node.cmds or () if isinstance(c, ast.AlterTableCmd)]
        if node.objtype not in (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_MATVIEW):
            return []
        found: list[_Finding] = []
        for command in commands:
            found += self._alter(table, command)
        if any(c.subtype not in _LIGHT_SUBCOMMANDS for c in commands):
            found += self._timeout("ALTER TABLE")
        return found

    def _alter(self, table: TableKey, command: ast.AlterTableCmd) -> list[_Finding]:
        subtype = command.subtype
        if subtype == AlterTableType.AT_AddColumn and isinstance(command.def_, ast.ColumnDef):
            return _add_column(command.def_)
        if subtype == AlterTableType.AT_AlterColumnType:
            return [_column_type(command)]
        if subtype == AlterTableType.AT_SetNotNull:
            return [
                _Finding(
                    "setting-not-nullable-field",
                    f"SET NOT NULL on {command.name} scans the whole table under an ACCESS "
                    "EXCLUSIVE lock: no reads or writes until it ends",
                    f"ADD CONSTRAINT ... CHECK ({command.name} IS NOT NULL) NOT VALID, "
                    "VALIDATE CONSTRAINT in a later version, then SET NOT NULL (PostgreSQL "
                    "12+ uses the valid check and skips the scan) and drop the check",
                )
            ]
        if subtype == AlterTableType.AT_AddConstraint and isinstance(command.def_, ast.Constraint):
            return self._constraint(table, command.def_)
        if subtype == AlterTableType.AT_ValidateConstraint:
            if self.state.in_transaction and (table[1], command.name or "") in self.state.not_valid:
                return [
                    _Finding(
                        "validate-in-same-transaction",
                        f"VALIDATE CONSTRAINT {command.name} in the transaction that added it "
                        "keeps the ADD's lock through the whole validating scan, as if NOT "
                        "VALID were not there",
                        "validate in a later version (its own transaction): VALIDATE takes "
                        "only a SHARE UPDATE EXCLUSIVE lock, which lets reads and writes on",
                    )
                ]
            return []
        if subtype == AlterTableType.AT_DropColumn:
            return [
                _Finding(
                    "ban-drop-column",
                    f"DROP COLUMN {command.name}: running code that selects or writes it "
                    "fails at once, and its data is gone",
                    "stop using the column in a release first (ORMs: mark it ignored), then "
                    "drop it in a later version",
                )
            ]
        if subtype in _REWRITES:
            return [self._rewrite(f"ALTER TABLE ... {_REWRITES[AlterTableType(subtype)]}")]
        return []

    def _constraint(self, table: TableKey, constraint: ast.Constraint) -> list[_Finding]:
        kind = constraint.contype
        name = constraint.conname or ""
        if constraint.skip_validation:
            self.state.not_valid.add((table[1], name))
            return []
        if kind == ConstrType.CONSTR_FOREIGN:
            return [
                _Finding(
                    "adding-foreign-key-constraint",
                    "ADD FOREIGN KEY checks every row while it blocks writes to both tables "
                    "(SHARE ROW EXCLUSIVE)",
                    "ADD CONSTRAINT ... FOREIGN KEY ... NOT VALID, then VALIDATE CONSTRAINT in "
                    "a later version (it lets reads and writes on)",
                )
            ]
        if kind == ConstrType.CONSTR_CHECK:
            return [
                _Finding(
                    "constraint-missing-not-valid",
                    "ADD CHECK scans every row under an ACCESS EXCLUSIVE lock: no reads or "
                    "writes until it ends",
                    "ADD CONSTRAINT ... CHECK (...) NOT VALID, then VALIDATE CONSTRAINT in a "
                    "later version (it lets reads and writes on)",
                )
            ]
        if kind in (
            ConstrType.CONSTR_UNIQUE,
            ConstrType.CONSTR_PRIMARY,
            ConstrType.CONSTR_EXCLUSION,
        ):
            if constraint.indexname:
                return []
            return [_unique_without_index(kind)]
        return []


def _unique_without_index(kind: ConstrType) -> _Finding:
    what = {ConstrType.CONSTR_PRIMARY: "PRIMARY KEY", ConstrType.CONSTR_EXCLUSION: "EXCLUDE"}
    label = what.get(kind, "UNIQUE")
    return _Finding(
        "disallowed-unique-constraint",
        f"ADD {label} builds its index under an ACCESS EXCLUSIVE lock: no reads or writes "
        "until it is built",
        f"CREATE UNIQUE INDEX CONCURRENTLY {_NO_TRANSACTION_ADVICE}, then ADD CONSTRAINT ... "
        f"{label} USING INDEX in a later version",
    )


def _type_name(type_name: ast.TypeName | None) -> str:
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


def _add_column(column: ast.ColumnDef) -> list[_Finding]:
    constraints = [c for c in column.constraints or () if isinstance(c, ast.Constraint)]
    kinds = {c.contype for c in constraints}
    default = next(
        (c.raw_expr for c in constraints if c.contype == ConstrType.CONSTR_DEFAULT), None
    )
    type_name = _type_name(column.typeName)
    found: list[_Finding] = []
    rewrite: str | None = None
    unknown: list[str] = []
    if type_name in _SERIAL_TYPES:
        rewrite = f"{type_name} (a nextval() default)"
    elif ConstrType.CONSTR_IDENTITY in kinds:
        rewrite = "an identity column"
    elif any(
        c.contype == ConstrType.CONSTR_GENERATED and c.generated_kind != "v" for c in constraints
    ):
        rewrite = "a stored generated column"
    elif default is not None:
        calls = set(_calls(default))
        volatile = sorted(calls & VOLATILE_FUNCTIONS)
        unknown = sorted(calls - VOLATILE_FUNCTIONS - NON_VOLATILE_FUNCTIONS)
        rewrite = f"a volatile default ({', '.join(volatile)})" if volatile else None
    if rewrite is not None or unknown:
        what = rewrite or f"a default calling {', '.join(unknown)}, if volatile,"
        found.append(
            _Finding(
                "adding-field-with-volatile-default",
                f"adding column {column.colname} with {what} rewrites the table and its "
                "indexes under an ACCESS EXCLUSIVE lock",
                "add the column nullable without that default (or with a constant one), set "
                "the default in the same version, backfill existing rows in batches, then add "
                "NOT NULL safely",
                severity=None if rewrite else WARNING,
            )
        )
    generated = rewrite is not None and default is None
    if ConstrType.CONSTR_NOTNULL in kinds and default is None and not generated:
        found.append(
            _Finding(
                "adding-not-nullable-field",
                f"adding column {column.colname} NOT NULL without a default fails on any "
                "table that has rows (existing rows would be NULL)",
                "give it a constant DEFAULT (no rewrite since PostgreSQL 11), or add it "
                "nullable, backfill, and add NOT NULL through a NOT VALID check",
            )
        )
    for kind in (ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE):
        if kind in kinds:
            found.append(_unique_without_index(kind))
    return found


def _column_type(command: ast.AlterTableCmd) -> _Finding:
    column = command.def_ if isinstance(command.def_, ast.ColumnDef) else None
    type_name = column.typeName if column is not None else None
    target = _type_name(type_name)
    unbounded = target in _UNBOUNDED_TEXT and not (type_name and type_name.typmods)
    message = (
        f"changing the type of {command.name} to {target or 'another type'} rewrites the "
        "table and its indexes under an ACCESS EXCLUSIVE lock: no reads or writes until it ends"
    )
    if unbounded:
        message += " (unless the column is already varchar or char: those become text in place)"
    return _Finding(
        "changing-column-type",
        message,
        "add a column of the new type, write both, backfill in batches, switch readers, then "
        "drop the old column in a later version",
        severity=WARNING if unbounded else None,
    )


def _ignored(sql: str, raws: Sequence[ast.RawStmt]) -> dict[int, set[str]]:
    """Statement index -> rule ids silenced by ``-- tenantflow:lint-ignore`` comments before
    it (after the previous statement) or inside it."""
    try:
        tokens = scan(sql)
    except Exception:  # unscannable text: nothing to silence
        return {}
    starts = [raw.stmt_location or 0 for raw in raws]
    silenced: dict[int, set[str]] = {}
    for token in tokens:
        if token.name != "SQL_COMMENT":
            continue
        match = _IGNORE.match(sql[token.start : token.end + 1].strip())
        if match is None:
            continue
        ids = {part for part in re.split(r"[\s,]+", match["ids"].strip()) if part}
        index = sum(1 for start in starts if start <= token.start)
        # Inside a statement: that one; between statements: the next one.
        if index and token.start < starts[index - 1] + (raws[index - 1].stmt_len or len(sql)):
            index -= 1
        silenced.setdefault(index, set()).update(ids)
    return silenced


def lint_sql(
    sql: str, *, no_transaction: bool = False, lock_timeout_ms: int = 5_000
) -> list[LockRisk]:
    """The lock-risk findings of one version's SQL, in statement order.

    Args:
        sql: The version's script (up or down).
        no_transaction: Whether the version runs outside a transaction (statement by statement).
        lock_timeout_ms: The run's ``lock_timeout`` (tenantflow sets it for every session;
            5000 unless the run says otherwise); 0 means off.

    Returns:
        One ``LockRisk`` per finding; none for text the parser refuses (PostgreSQL reports
        its own syntax error when the version runs).
    """
    try:
        raws = parse_sql(sql)
    except ParseError:
        return []
    linter = _Linter(no_transaction, lock_timeout_ms)
    silenced = _ignored(sql, raws)
    risks: list[LockRisk] = []
    for index, raw in enumerate(raws):
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(sql)
        text = " ".join(sql[start:end].split())
        if raw.stmt is None:
            continue
        for finding in linter.statement(raw.stmt):
            rule = RULES[finding.rule]
            if rule.id in silenced.get(index, ()):
                continue
            risks.append(
                LockRisk(
                    rule=rule.id,
                    severity=finding.severity or rule.severity,
                    line=line_at(sql, start),
                    message=finding.message,
                    advice=finding.advice,
                    statement=text[:_SHOWN],
                )
            )
    return risks


class LintCache:
    """Findings per (set, version, checksum, direction, no-transaction, timeout on): a version
    is immutable once registered, so a fleet dry run over many targets lints each version once."""

    def __init__(self, size: int = 4_096) -> None:
        self._size = size
        self._lock = threading.Lock()  # the gateway lints in worker threads
        self._found: OrderedDict[tuple[str, str, str, str, bool, bool], list[LockRisk]] = (
            OrderedDict()
        )

    def lint(
        self,
        set_name: str,
        migration: Migration,
        *,
        down: bool = False,
        no_transaction: bool | None = None,
        lock_timeout_ms: int = 5_000,
    ) -> list[LockRisk]:
        """``lint_sql`` of the version's up (or down) script, remembered; ``no_transaction``:
        how the script runs (the version's flag for the up script when None)."""
        if no_transaction is None:
            no_transaction = (
                getattr(migration, "down_outside_transaction", migration.no_transaction)
                if down
                else migration.no_transaction
            )
        direction = "down" if down else "up"
        key = (set_name, migration.version, migration.checksum, direction, bool(no_transaction))
        full = (*key, lock_timeout_ms > 0)
        with self._lock:
            found = self._found.get(full)
            if found is not None:
                self._found.move_to_end(full)
        if found is None:
            sql = (migration.down_sql or "") if down else migration.up_sql
            found = lint_sql(
                sql, no_transaction=bool(no_transaction), lock_timeout_ms=lock_timeout_ms
            )
            with self._lock:
                self._found[full] = found
                if len(self._found) > self._size:
                    self._found.popitem(last=False)
        return [risk.model_copy() for risk in found]


CACHE = LintCache()


def lint_set(
    name: str,
    migrations: Sequence[Migration],
    *,
    down: bool = False,
    lock_timeout_ms: int = 5_000,
    cache: LintCache = CACHE,
) -> SetLint:
    """Every version's findings (withdrawn versions left out: they are never applied; with
    ``down``, the versions that have a down script)."""
    versions = [
        VersionLint(
            version=m.version,
            description=m.description,
            no_transaction=m.no_transaction,
            source=m.source,
            warnings=cache.lint(name, m, down=down, lock_timeout_ms=lock_timeout_ms),
        )
        for m in migrations
        if not m.withdrawn and (not down or m.down_sql is not None)
    ]
    risks = [r for v in versions for r in v.warnings]
    return SetLint(
        name=name,
        direction="down" if down else "up",
        errors=sum(1 for r in risks if r.severity is ERROR),
        warnings=sum(1 for r in risks if r.severity is WARNING),
        versions=versions,
    )
