"""Reading migration SQL with PostgreSQL's own parser (``pglast``, libpg_query).

Offsets are character offsets into the text as given; lines are 1-based.
"""

from __future__ import annotations

from dataclasses import dataclass

from pglast import ast, parse_sql
from pglast.parser import ParseError, scan

# TransactionStmtKind values that end or start a transaction (SAVEPOINT, RELEASE and ROLLBACK
# TO stay inside one and are allowed).
_ENDS_TRANSACTION = {0: "BEGIN", 1: "START TRANSACTION", 2: "COMMIT", 3: "ROLLBACK"}
_ENDS_TRANSACTION |= {7: "PREPARE TRANSACTION", 8: "COMMIT PREPARED", 9: "ROLLBACK PREPARED"}


@dataclass(frozen=True)
class Statement:
    """One statement of a script: its text (no trailing semicolon) and where it starts."""

    text: str
    offset: int
    line: int


@dataclass(frozen=True)
class Refusal:
    """Why a script cannot run as a version, and the line (1-based, in the script)."""

    line: int
    message: str


def line_at(sql: str, offset: int) -> int:
    """The 1-based line of a character offset."""
    return sql.count("\n", 0, max(offset, 0)) + 1


def split_statements(sql: str) -> list[Statement]:
    """The statements of ``sql`` in order; comments between them are dropped.

    Uses the parser; a script it cannot parse (newer syntax, or simply wrong) is split by the
    scanner instead, so PostgreSQL still gets to report its own error.
    """
    try:
        raws = parse_sql(sql)
    except ParseError:
        return _split_by_scanner(sql)
    statements = []
    for raw in raws:
        begin = raw.stmt_location or 0
        end = begin + raw.stmt_len if raw.stmt_len else len(sql)
        text = sql[begin:end].strip().rstrip(";").strip()
        if text:
            statements.append(Statement(text, begin, line_at(sql, begin)))
    return statements


def _split_by_scanner(sql: str) -> list[Statement]:
    """Statements ended by semicolons that the scanner sees (not those in strings, comments or
    dollar quotes); for text the parser refuses."""
    found: list[Statement] = []
    start: int | None = None
    try:
        tokens = scan(sql)
    except Exception:  # the scanner refusing too: one statement, PostgreSQL will say why
        return [Statement(sql.strip(), 0, 1)] if sql.strip() else []
    for token in tokens:
        if token.name in ("SQL_COMMENT", "C_COMMENT"):
            continue
        if token.name == "ASCII_59":
            if start is not None:
                found.append(
                    Statement(sql[start : token.start].strip(), start, line_at(sql, start))
                )
            start = None
        elif start is None:
            start = token.start
    if start is not None and sql[start:].strip():
        found.append(Statement(sql[start:].strip(), start, line_at(sql, start)))
    return found


def _meta_commands(sql: str) -> list[Refusal]:
    """psql backslash commands: a backslash outside strings and comments."""
    try:
        tokens = scan(sql)
    except Exception:  # the scanner refusing is PostgreSQL's error to report
        return []
    refusals = []
    copy_at: int | None = None
    for token in tokens:
        if token.name == "COPY":
            copy_at = token.start
        if token.name == "ASCII_92" and sql.startswith("\\.", token.start) and copy_at is not None:
            refusals.append(
                Refusal(
                    line_at(sql, copy_at),
                    "COPY ... FROM STDIN with inline data needs psql to feed it and would hang "
                    "the target; use INSERT ... VALUES, or COPY from a server-side file",
                )
            )
        elif token.name == "ASCII_92":
            word = sql[token.start :].split(None, 1)[0] if sql[token.start :].strip() else "\\"
            refusals.append(
                Refusal(
                    line_at(sql, token.start),
                    f"psql meta-command {word[:20]!r} is not SQL: tenantflow sends each version "
                    "to PostgreSQL as it is (inline included files; no \\set or \\connect)",
                )
            )
    return refusals


def refusals(sql: str, *, no_transaction: bool) -> list[Refusal]:
    """What in ``sql`` cannot run as a version: transaction control in a transactional version
    (it would end the engine's transaction and lock), ``COPY ... FROM STDIN`` or ``TO STDOUT``
    (nothing feeds or drains it: the target would hang), and psql meta-commands."""
    found = _meta_commands(sql)
    if found:
        return found
    try:
        raws = parse_sql(sql)
    except ParseError:
        return []  # PostgreSQL reports its own syntax error when the version runs
    began_at: int | None = None  # the line of a no-transaction version's open BEGIN
    for raw in raws:
        stmt, line = raw.stmt, line_at(sql, raw.stmt_location or 0)
        if isinstance(stmt, ast.TransactionStmt) and no_transaction:
            kind_number = int(stmt.kind or 0)
            if kind_number in (0, 1):
                began_at = line if began_at is None else began_at
            elif kind_number in (2, 3):
                began_at = None
        if isinstance(stmt, ast.TransactionStmt) and not no_transaction:
            kind = _ENDS_TRANSACTION.get(int(stmt.kind or 0))
            if kind is not None:
                found.append(
                    Refusal(
                        line,
                        f"{kind} ends the transaction tenantflow runs each version in (its "
                        "lock and ledger row with it); remove it, or mark the file "
                        "'-- tenantflow:no-transaction' to run it statement by statement",
                    )
                )
        if isinstance(stmt, ast.CopyStmt) and stmt.filename is None and not stmt.is_program:
            where = "FROM STDIN" if stmt.is_from else "TO STDOUT"
            found.append(
                Refusal(
                    line,
                    f"COPY ... {where} needs psql to feed it and would hang the target; "
                    "use INSERT ... VALUES, or COPY from a server-side file",
                )
            )
    if began_at is not None:
        found.append(
            Refusal(
                began_at,
                "this transaction is never committed: the version would end inside it and "
                "its changes would be lost; end it with COMMIT",
            )
        )
    return found


def has_marker(sql: str, marker: str) -> bool:
    """Whether ``marker`` (``-- something``) stands as a line comment alone on its line:
    not inside a block comment, a string or a function body."""
    try:
        tokens = scan(sql)
    except Exception:  # unscannable text: no marker can be trusted in it
        return False
    wanted = marker.replace(" ", "").lower()
    for token in tokens:
        if token.name != "SQL_COMMENT":
            continue
        text = sql[token.start : token.end + 1]
        line_start = sql.rfind("\n", 0, token.start) + 1
        alone = not sql[line_start : token.start].strip()
        if alone and text.replace(" ", "").replace("\t", "").strip().lower() == wanted:
            return True
    return False


# When a statement of a no-transaction version may already have taken effect (a crash between
# it and the ledger's progress note, or a retry of a failed build), these errors mean "done".
ALREADY_THERE = frozenset({"42P07", "42710", "42701", "42P06", "42723"})
# ...and these too, for a statement that drops something.
ALREADY_GONE = frozenset({"42P01", "42704", "42883", "42703", "3F000"})
_DROP_SUBTYPES = frozenset({"AT_DropColumn", "AT_DropConstraint"})


@dataclass(frozen=True)
class IndexBuild:
    """An index a statement builds: its name and its table as ``to_regclass`` reads it."""

    name: str
    table: str


@dataclass(frozen=True)
class Convergence:
    """How to run a statement again that may already have taken effect: the index it builds
    (checked first: a valid one is kept, an INVALID one dropped and rebuilt) and the SQLSTATEs
    that mean its effect is already there."""

    index: IndexBuild | None
    done_codes: frozenset[str]


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def convergence(statement: str) -> Convergence:
    """How ``statement`` (one statement) converges when it is run again."""
    try:
        raws = parse_sql(statement)
    except ParseError:
        return Convergence(None, ALREADY_THERE)
    if len(raws) != 1:
        return Convergence(None, ALREADY_THERE)
    node = raws[0].stmt
    if isinstance(node, ast.IndexStmt) and node.idxname and node.relation is not None:
        relation = node.relation
        parts = [p for p in (relation.schemaname, relation.relname) if p]
        table = ".".join(_quoted(p) for p in parts)
        return Convergence(IndexBuild(node.idxname, table), ALREADY_THERE)
    drops = isinstance(node, ast.DropStmt) or (
        isinstance(node, ast.AlterTableStmt)
        and bool(node.cmds)
        and all(getattr(cmd.subtype, "name", "") in _DROP_SUBTYPES for cmd in node.cmds or ())
    )
    return Convergence(None, ALREADY_THERE | ALREADY_GONE if drops else ALREADY_THERE)
