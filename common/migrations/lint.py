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
from collections.abc import Sequence

from pglast import ast, parse_sql
from pglast.parser import ParseError, scan

from common.migrations.lint_rules import ERROR, RULES, WARNING
from common.migrations.lint_statements import StatementLinter
from common.migrations.sql import line_at
from models.lint import LockRisk, SetLint, VersionLint
from models.migrations import Migration

_IGNORE = re.compile(r"^--\s*tenantflow:lint-ignore\b(?P<ids>.*)$", re.IGNORECASE)
_SHOWN = 200


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
    linter = StatementLinter(no_transaction, lock_timeout_ms)
    silenced = _ignored(sql, raws)
    risks: list[LockRisk] = []
    for index, raw in enumerate(raws):
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(sql)
        text = " ".join(sql[start:end].split())
        if raw.stmt is None:
            continue
        for found in linter.statement(raw.stmt):
            rule = RULES[found.rule]
            if rule.id in silenced.get(index, ()):
                continue
            risks.append(
                LockRisk(
                    rule=rule.id,
                    severity=found.severity or rule.severity,
                    line=line_at(sql, start),
                    message=found.message,
                    advice=found.advice,
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
        how the script runs (when None: as the version says for that script)."""
        if no_transaction is None:
            no_transaction = (
                migration.down_outside_transaction if down else migration.no_transaction
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
            no_transaction=m.down_outside_transaction if down else m.no_transaction,
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
