"""The lock-risk lint's statement visitor (``common.migrations.lint``): one version's statements
in order, each judged in the context the earlier ones made (tables created in the version, a
``SET lock_timeout`` in force, a no-transaction version), with the rules of
``common.migrations.lint_rules``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pglast import ast
from pglast.enums import AlterTableType, ConstrType, ObjectType, VariableSetKind

from common.migrations.lint_rules import (
    LIGHT_SUBCOMMANDS,
    NO_TRANSACTION_ADVICE,
    REWRITES,
    Finding,
    TableKey,
    add_column,
    column_type,
    finding,
    name_key,
    rewrite,
    same_table,
    table_key,
    unique_without_index,
)

_DURATION = re.compile(r"^\s*(?P<number>\d+(?:\.\d*)?)\s*[a-z]*\s*$", re.IGNORECASE)


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
        return table is not None and any(same_table(table, t) for t in self.created_tables)

    @property
    def timeout_on(self) -> bool:
        return self.local_timeout if self.local_timeout is not None else self.session_timeout


class StatementLinter:
    """Walks one version's statements in order, keeping its context."""

    def __init__(self, no_transaction: bool, lock_timeout_ms: int) -> None:
        self.state = _Version(
            no_transaction=no_transaction,
            run_timeout=lock_timeout_ms > 0,
            session_timeout=lock_timeout_ms > 0,
            in_transaction=not no_transaction,
        )

    def statement(self, node: ast.Node) -> list[Finding]:
        """The findings of one statement; updates the context after it."""
        handler = getattr(self, f"_{type(node).__name__}", None)
        found: list[Finding] = handler(node) if handler is not None else []
        return found

    # --- context -------------------------------------------------------------------------

    def _TransactionStmt(self, node: ast.TransactionStmt) -> list[Finding]:
        kind = int(node.kind or 0)
        if kind in (0, 1):  # BEGIN, START TRANSACTION
            self.state.in_transaction = True
        elif kind in (2, 3) and self.state.no_transaction:  # COMMIT, ROLLBACK
            self.state.in_transaction = False
            self.state.local_timeout = None
        return []

    def _VariableSetStmt(self, node: ast.VariableSetStmt) -> list[Finding]:
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

    def _SelectStmt(self, node: ast.SelectStmt) -> list[Finding]:
        """``SELECT set_config('lock_timeout', ..., is_local)`` counts as a SET; ``SELECT ...
        INTO`` creates a table."""
        if node.intoClause is not None:
            self._created(table_key(node.intoClause.rel))
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

    def _CreateStmt(self, node: ast.CreateStmt) -> list[Finding]:
        self._created(table_key(node.relation))
        # A foreign key of the new table locks the table it references (SHARE ROW EXCLUSIVE).
        referenced = [
            table_key(c.pktable)
            for element in node.tableElts or ()
            for c in [element, *(getattr(element, "constraints", None) or ())]
            if isinstance(c, ast.Constraint) and c.contype == ConstrType.CONSTR_FOREIGN
        ]
        if any(not self.state.is_new(t) for t in referenced):
            return self._timeout("a foreign key locks the table it references")
        return []

    def _CreateTableAsStmt(self, node: ast.CreateTableAsStmt) -> list[Finding]:
        if node.into is not None:
            self._created(table_key(node.into.rel))
        return []

    # --- rules ---------------------------------------------------------------------------

    def _timeout(self, what: str) -> list[Finding]:
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
        return [finding("require-lock-timeout", what=what, why=why, how=how)]

    def _IndexStmt(self, node: ast.IndexStmt) -> list[Finding]:
        table = table_key(node.relation)
        if node.idxname:
            self.state.created_indexes.append((table[0] if table else None, node.idxname))
        if node.concurrent:
            return self._concurrently_in_transaction("CREATE INDEX CONCURRENTLY")
        if self.state.is_new(table):
            return []
        where = (
            "add CONCURRENTLY"
            if self.state.no_transaction
            else f"use CREATE INDEX CONCURRENTLY {NO_TRANSACTION_ADVICE}"
        )
        return [
            finding("require-concurrent-index-creation", where=where),
            *self._timeout("CREATE INDEX"),
        ]

    def _concurrently_in_transaction(self, what: str) -> list[Finding]:
        if not self.state.in_transaction:
            return []
        return [finding("concurrently-in-transaction", what=what)]

    def _ReindexStmt(self, node: ast.ReindexStmt) -> list[Finding]:
        options = {getattr(p, "defname", "") for p in node.params or ()}
        if "concurrently" in options:
            return self._concurrently_in_transaction("REINDEX CONCURRENTLY")
        return [
            finding("require-concurrent-reindex"),
            *self._timeout("REINDEX"),
        ]

    def _DropStmt(self, node: ast.DropStmt) -> list[Finding]:
        names = [name_key(obj) for obj in node.objects or () if isinstance(obj, tuple | list)]
        if node.removeType == ObjectType.OBJECT_INDEX:
            if node.concurrent:
                return self._concurrently_in_transaction("DROP INDEX CONCURRENTLY")
            created = self.state.created_indexes
            if all(n is not None and any(same_table(n, c) for c in created) for n in names):
                return []
            return [finding("require-concurrent-index-deletion"), *self._timeout("DROP INDEX")]
        if node.removeType != ObjectType.OBJECT_TABLE:
            return []
        existing = [n for n in names if not self.state.is_new(n)]
        if not existing:
            return []
        shown = ", ".join(".".join(p for p in n if p) for n in existing if n is not None)
        return [finding("ban-drop-table", tables=shown), *self._timeout("DROP TABLE")]

    def _RenameStmt(self, node: ast.RenameStmt) -> list[Finding]:
        if self.state.is_new(table_key(node.relation)):
            return []
        if node.renameType == ObjectType.OBJECT_COLUMN and node.relationType in (
            ObjectType.OBJECT_TABLE,
            ObjectType.OBJECT_FOREIGN_TABLE,
        ):
            found = finding("renaming-column", old=node.subname, new=node.newname)
        elif node.renameType == ObjectType.OBJECT_TABLE:
            old = node.relation.relname if node.relation else ""
            found = finding("renaming-table", old=old, new=node.newname)
        else:
            return []
        return [found, *self._timeout("RENAME")]

    def _VacuumStmt(self, node: ast.VacuumStmt) -> list[Finding]:
        options = {getattr(o, "defname", "") for o in node.options or ()}
        if "full" not in options:
            return []
        return [rewrite("VACUUM FULL")]

    def _ClusterStmt(self, node: ast.ClusterStmt) -> list[Finding]:
        if self.state.is_new(table_key(node.relation)):
            return []
        return [rewrite("CLUSTER")]

    def _LockStmt(self, node: ast.LockStmt) -> list[Finding]:
        del node
        return self._timeout("LOCK TABLE")

    def _TruncateStmt(self, node: ast.TruncateStmt) -> list[Finding]:
        if all(self.state.is_new(table_key(r)) for r in node.relations or ()):
            return []
        return self._timeout("TRUNCATE")

    def _CreateTrigStmt(self, node: ast.CreateTrigStmt) -> list[Finding]:
        if self.state.is_new(table_key(node.relation)):
            return []
        return self._timeout("CREATE TRIGGER")

    def _AlterTableStmt(self, node: ast.AlterTableStmt) -> list[Finding]:
        table = table_key(node.relation)
        if self.state.is_new(table) or table is None:
            return []
        commands = [c for c in node.cmds or () if isinstance(c, ast.AlterTableCmd)]
        if node.objtype not in (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_MATVIEW):
            return []
        found: list[Finding] = []
        for command in commands:
            found += self._alter(table, command)
        if any(c.subtype not in LIGHT_SUBCOMMANDS for c in commands):
            found += self._timeout("ALTER TABLE")
        return found

    def _alter(self, table: TableKey, command: ast.AlterTableCmd) -> list[Finding]:
        subtype = command.subtype
        if subtype == AlterTableType.AT_AddColumn and isinstance(command.def_, ast.ColumnDef):
            return add_column(command.def_)
        if subtype == AlterTableType.AT_AlterColumnType:
            return [column_type(command)]
        if subtype == AlterTableType.AT_SetNotNull:
            return [finding("setting-not-nullable-field", column=command.name)]
        if subtype == AlterTableType.AT_AddConstraint and isinstance(command.def_, ast.Constraint):
            return self._constraint(table, command.def_)
        if subtype == AlterTableType.AT_ValidateConstraint:
            if self.state.in_transaction and (table[1], command.name or "") in self.state.not_valid:
                return [finding("validate-in-same-transaction", constraint=command.name)]
            return []
        if subtype == AlterTableType.AT_DropColumn:
            return [finding("ban-drop-column", column=command.name)]
        if subtype in REWRITES:
            return [rewrite(f"ALTER TABLE ... {REWRITES[AlterTableType(subtype)]}")]
        return []

    def _constraint(self, table: TableKey, constraint: ast.Constraint) -> list[Finding]:
        kind = constraint.contype
        name = constraint.conname or ""
        if constraint.skip_validation:
            self.state.not_valid.add((table[1], name))
            return []
        if kind == ConstrType.CONSTR_FOREIGN:
            return [finding("adding-foreign-key-constraint")]
        if kind == ConstrType.CONSTR_CHECK:
            return [finding("constraint-missing-not-valid")]
        if kind in (
            ConstrType.CONSTR_UNIQUE,
            ConstrType.CONSTR_PRIMARY,
            ConstrType.CONSTR_EXCLUSION,
        ):
            if constraint.indexname:
                return []
            return [unique_without_index(kind)]
        return []
