"""``GET /api/v1/migrations/{id}/targets``: a fleet run's targets in one state, page by page.

A compact run (every run since compact state) keeps no entry per finished target, so a page is
built from what it does keep (the progress snapshot: queued, in flight, failed up to 500, the
last 100 results, the selector's cursor ``position``) and from the catalog: the run's selector
(its ``spec`` query, which never changes) is walked in its own order and each target classified.
``succeeded`` and ``up_to_date`` read the ledgers of a page's finished targets
(``gateway.outcomes``). An older run answers every target in its progress and is paged as is.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from temporalio.client import WorkflowQueryFailedError
from temporalio.service import RPCError

from common.catalog.databases import DatabaseRepository, decode_cursor, encode_cursor
from common.errors import DependencyUnavailable, InvalidInput
from gateway.auth.deps import MigrationsRead
from gateway.deps import SettingsDep, TemporalDep
from gateway.outcomes import read_outcomes
from gateway.routers.databases import RepositoryDep
from gateway.routers.migrations import (
    QUERY_TIMEOUT_SECONDS,
    RUN_ERRORS,
    CacheDep,
    FleetHandle,
    _fetcher,
    _run_handle,
)
from models.fleet import FleetProgress, FleetRunInput, FleetSelector
from models.run_state import TargetProgress, TargetState
from models.run_targets import ItemState, RunTargetItem, RunTargetsPage, TargetsFilter
from workflows.fleet import MigrateFleetWorkflow

router = APIRouter(prefix="/api/v1/migrations", tags=["migrations"])

MAX_LIMIT = 500
# Targets of the selector one request walks at most (a filter that matches few of them answers
# short pages with a next_cursor rather than one slow one); fewer when ledgers are read.
WALK_BUDGET = 2_000
LEDGER_WALK_BUDGET = 1_000
OUTCOMES_PER_CALL = 200
SPECS_KEPT = 1_000

DONE_STATES = {ItemState.SUCCEEDED, ItemState.UP_TO_DATE, ItemState.DONE}
WALKED = {TargetsFilter.DONE, TargetsFilter.ALL, TargetsFilter.SUCCEEDED, TargetsFilter.UP_TO_DATE}
READS_LEDGERS = {TargetsFilter.SUCCEEDED, TargetsFilter.UP_TO_DATE}


# -- the opaque cursor: the filter it belongs to and where the previous page stopped ----------
def _encode(view: TargetsFilter, at: str) -> str:
    raw = json.dumps({"s": view.value, "a": at}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(view: TargetsFilter, cursor: str | None) -> str | None:
    """Where to continue (an id, or the selector's own cursor); 400 when it is not one of ours
    or belongs to another filter."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
        state, at = value["s"], value["a"]
    except (binascii.Error, ValueError, TypeError, KeyError):
        raise InvalidInput("invalid cursor", details={"cursor": cursor[:64]}) from None
    if state != view.value or not isinstance(at, str):
        raise InvalidInput(
            "the cursor belongs to another listing",
            details={"cursor": cursor[:64], "state": view.value},
        )
    return at


# -- the run's selector, walked in the order the run resolves it ------------------------------
@dataclass(frozen=True)
class _Entry:
    database_id: uuid.UUID
    name: str | None
    cursor: str  # the selector's cursor just after this target


class _Walk:
    """A selector in its own order: by name for labels or all (cursor = encoded name, as
    ``resolve_targets`` pages it), by index for explicit ids (cursor = the next index)."""

    def __init__(self, selector: FleetSelector, databases: DatabaseRepository) -> None:
        self._selector = selector
        self._databases = databases

    def _index(self, cursor: str | None) -> int:
        if cursor is None:
            return 0
        if not cursor.isdigit() or int(cursor) > len(self._selector.database_ids):
            raise InvalidInput("invalid cursor", details={"cursor": cursor[:64]})
        return int(cursor)

    async def chunk(self, after: str | None, size: int) -> list[_Entry]:
        """Up to ``size`` targets after ``after``."""
        if self._selector.database_ids:
            start = self._index(after)
            ids = self._selector.database_ids[start : start + size]
            names = await self._databases.names(ids)
            return [
                _Entry(database_id, names.get(str(database_id)), str(start + offset + 1))
                for offset, database_id in enumerate(ids)
            ]
        page = await self._databases.list(labels=self._selector.labels, limit=size, cursor=after)
        return [_Entry(d.id, d.name, encode_cursor(d.name)) for d in page.items]

    async def entries(self, database_ids: Sequence[uuid.UUID]) -> list[_Entry]:
        """Those of ``database_ids`` still in the catalog (or named by the selector), with
        their cursors."""
        names = await self._databases.names(database_ids)
        if self._selector.database_ids:
            index = {database_id: i for i, database_id in enumerate(self._selector.database_ids)}
            return [
                _Entry(d, names.get(str(d)), str(index[d] + 1)) for d in database_ids if d in index
            ]
        return [
            _Entry(d, names[str(d)], encode_cursor(names[str(d)]))
            for d in database_ids
            if str(d) in names
        ]

    async def later(self, cursors: Sequence[str], pivot: str) -> list[bool]:
        """For each cursor, whether it lies strictly after ``pivot`` in the selector's order.
        Names compare in PostgreSQL, under the collation the catalog pages them by."""
        if self._selector.database_ids:
            return [self._index(c) > self._index(pivot) for c in cursors]
        rows = await self._databases.pool.fetch(
            "SELECT n > $2 AS later FROM unnest($1::text[]) WITH ORDINALITY AS t(n, i) ORDER BY i",
            [decode_cursor(c) for c in cursors],
            decode_cursor(pivot),
        )
        return [bool(row["later"]) for row in rows]

    async def latest(self, first: str | None, second: str | None) -> str | None:
        """The later of two cursors (None is the start)."""
        if first is None or second is None:
            return second if first is None else first
        return first if (await self.later([first], second))[0] else second


# -- the run's spec, which never changes: one query per run and gateway --------------------------
async def query_spec(handle: FleetHandle) -> FleetRunInput:
    """The run's ``spec`` query: its input without its state (503 when it cannot be read)."""
    try:
        return await handle.query(
            MigrateFleetWorkflow.spec, rpc_timeout=timedelta(seconds=QUERY_TIMEOUT_SECONDS)
        )
    except (RPCError, WorkflowQueryFailedError) as exc:
        raise DependencyUnavailable(
            "the run's selector could not be read", details={"cause": str(exc)[:300]}
        ) from None


async def _spec(request: Request, handle: FleetHandle, run_id: str) -> FleetRunInput:
    specs: OrderedDict[str, FleetRunInput] | None = getattr(request.app.state, "run_specs", None)
    if specs is None:
        specs = request.app.state.run_specs = OrderedDict()
    if run_id in specs:
        specs.move_to_end(run_id)
        return specs[run_id]
    spec = await query_spec(handle)
    specs[run_id] = spec
    while len(specs) > SPECS_KEPT:
        specs.popitem(last=False)
    return spec


def _item(entry: _Entry, state: ItemState, known: TargetProgress | None = None) -> RunTargetItem:
    detail: dict[str, Any] = {}
    if known is not None:
        detail = known.model_dump(include={"from_version", "to_version", "error", "repeatables"})
    return RunTargetItem(database_id=entry.database_id, name=entry.name, state=state, **detail)


def _matches(view: TargetsFilter, state: ItemState) -> bool:
    if view is TargetsFilter.ALL:
        return True
    if view is TargetsFilter.DONE:
        return state in DONE_STATES
    return state.value == view.value


@router.get(
    "/{run_id}/targets",
    summary="A fleet run's targets in one state, page by page",
    responses=RUN_ERRORS | {400: RUN_ERRORS[404] | {"description": "A bad cursor."}},
)
async def list_run_targets(
    run_id: str,
    request: Request,
    principal: MigrationsRead,
    temporal: TemporalDep,
    settings: SettingsDep,
    cache: CacheDep,
    databases: RepositoryDep,
    state: Annotated[
        TargetsFilter,
        Query(description="pending, running, succeeded, failed, up_to_date, done or all."),
    ] = TargetsFilter.ALL,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    cursor: Annotated[
        str | None, Query(max_length=1024, description="next_cursor of the previous page.")
    ] = None,
) -> RunTargetsPage:
    """One page of the run's targets in ``state``, with names, versions and errors.

    ``running``, ``failed`` and ``pending`` come from what the run keeps (``pending``: the
    queued targets, then those of the selector it has not resolved yet); ``done``, ``all``,
    ``succeeded`` and ``up_to_date`` walk the run's selector in its order from the cursor. A
    finished target the run no longer remembers is ``done``; ``succeeded`` and ``up_to_date``
    tell them apart by reading their ledgers. A filtered page may hold fewer than ``limit``
    items (a request walks at most a few thousand targets): ``next_cursor`` is null only at
    the end. A failed target beyond the 500 a run keeps is counted in ``failed_not_listed``."""
    del principal
    handle = _run_handle(temporal, run_id)
    progress = (await cache.get(run_id, _fetcher(handle, run_id))).progress
    at = _decode(state, cursor)
    if progress.targets_complete:
        return await _whole_run_page(databases, progress, state, limit, at)
    if state in (TargetsFilter.RUNNING, TargetsFilter.FAILED):
        return await _kept_page(databases, progress, state, limit, at)
    walk = _Walk((await _spec(request, handle, run_id)).selector, databases)
    if state is TargetsFilter.PENDING:
        return await _pending_page(walk, progress, limit, at)

    async def outcomes(ids: list[uuid.UUID]) -> dict[uuid.UUID, TargetState | None]:
        found: dict[uuid.UUID, TargetState | None] = {}
        for start in range(0, len(ids), OUTCOMES_PER_CALL):
            found |= await read_outcomes(
                temporal,
                settings,
                run_id=run_id,
                set_name=progress.set_name,
                database_ids=ids[start : start + OUTCOMES_PER_CALL],
            )
        return found

    return await _walked_page(walk, progress, state, limit, at, outcomes)


def _page(
    progress: FleetProgress,
    view: TargetsFilter,
    found: list[tuple[RunTargetItem, str]],
    limit: int,
    *,
    more_at: str | None = None,
    complete: bool = True,
) -> RunTargetsPage:
    """``found`` holds up to limit + 1 items with their cursors: one beyond says there is more;
    ``more_at`` is where an unfinished walk stopped."""
    next_cursor = found[limit - 1][1] if len(found) > limit else more_at
    return RunTargetsPage(
        run_id=progress.run_id,
        state=view,
        items=[item for item, _ in found[:limit]],
        next_cursor=None if next_cursor is None else _encode(view, next_cursor),
        failed_not_listed=progress.failed_not_listed,
        complete=complete,
    )


async def _whole_run_page(
    databases: DatabaseRepository,
    progress: FleetProgress,
    view: TargetsFilter,
    limit: int,
    at: str | None,
) -> RunTargetsPage:
    """A run from before compact state: every target is in its progress; id order."""
    keys = sorted(
        key
        for key, target in progress.targets.items()
        if _matches(view, ItemState(target.state.value)) and (at is None or key > at)
    )[: limit + 1]
    return await _named_page(databases, progress, view, keys, limit)


async def _kept_page(
    databases: DatabaseRepository,
    progress: FleetProgress,
    view: TargetsFilter,
    limit: int,
    at: str | None,
) -> RunTargetsPage:
    """``running`` or ``failed`` of a compact run: the run keeps all of them (failed up to
    500, and the most recent ones); id order."""
    wanted = TargetState(view.value)
    keys = sorted(
        key
        for key, target in progress.targets.items()
        if target.state is wanted and (at is None or key > at)
    )[: limit + 1]
    return await _named_page(databases, progress, view, keys, limit)


async def _named_page(
    databases: DatabaseRepository,
    progress: FleetProgress,
    view: TargetsFilter,
    keys: list[str],
    limit: int,
) -> RunTargetsPage:
    names = await databases.names([uuid.UUID(key) for key in keys[:limit]])
    found = [
        (
            _item(
                _Entry(uuid.UUID(key), names.get(key), key),
                ItemState(progress.targets[key].state.value),
                progress.targets[key],
            ),
            key,
        )
        for key in keys
    ]
    if progress.targets_complete:
        return RunTargetsPage(
            run_id=progress.run_id,
            state=view,
            items=[item for item, _ in found[:limit]],
            next_cursor=_encode(view, keys[limit - 1]) if len(keys) > limit else None,
            complete=True,
        )
    if view is TargetsFilter.FAILED:
        # Failed targets beyond those kept may still show among the recent results.
        listed = sum(1 for t in progress.targets.values() if t.state is TargetState.FAILED)
        page = _page(progress, view, found, limit)
        not_listed = max(progress.counts.failed - listed, 0)
        return page.model_copy(update={"failed_not_listed": not_listed, "complete": not not_listed})
    return _page(progress, view, found, limit)


def _unresolved_after(progress: FleetProgress) -> tuple[bool, str | None]:
    """Whether some targets are not resolved yet, and the cursor they follow (None: all)."""
    return (not progress.total_known, progress.position)


async def _pending_page(
    walk: _Walk, progress: FleetProgress, limit: int, at: str | None
) -> RunTargetsPage:
    """The queued targets (in selector order), then those the run has not resolved yet."""
    queued = await walk.entries([uuid.UUID(key) for key in progress.queued])
    if at is not None and queued:
        flags = await walk.later([e.cursor for e in queued], at)
        queued = [entry for entry, later in zip(queued, flags, strict=True) if later]
    found = [(_item(e, ItemState.PENDING), e.cursor) for e in queued[: limit + 1]]
    unresolved, position = _unresolved_after(progress)
    if unresolved and len(found) <= limit:
        start = await walk.latest(at, position)
        rest = await walk.chunk(start, limit + 1 - len(found))
        found += [(_item(e, ItemState.PENDING), e.cursor) for e in rest]
    return _page(progress, TargetsFilter.PENDING, found, limit)


async def _walked_page(
    walk: _Walk,
    progress: FleetProgress,
    view: TargetsFilter,
    limit: int,
    at: str | None,
    outcomes: Callable[[list[uuid.UUID]], Awaitable[dict[uuid.UUID, TargetState | None]]],
) -> RunTargetsPage:
    """Walk the selector from ``at``: each target is pending (queued or not resolved yet),
    running, failed, or finished (its recent result, else ``done``; the ledgers say which when
    the filter asks for succeeded or up_to_date)."""
    unresolved, position = _unresolved_after(progress)
    queued = set(progress.queued)
    reads = view in READS_LEDGERS
    budget = LEDGER_WALK_BUDGET if reads else WALK_BUDGET
    found: list[tuple[RunTargetItem, str]] = []
    # Failed targets the run did not keep are finished targets it cannot tell from done ones.
    failed_unnamed = progress.failed_not_listed > 0
    complete = True
    walked = 0
    while True:
        size = min(OUTCOMES_PER_CALL if reads else MAX_LIMIT + 1, max(limit + 1 - len(found), 50))
        chunk = await walk.chunk(at, size)
        if not chunk:
            return _page(progress, view, found, limit, complete=complete and not failed_unnamed)
        if not unresolved:
            after = [False] * len(chunk)
        elif position is None:
            after = [True] * len(chunk)
        else:
            after = await walk.later([e.cursor for e in chunk], position)
        items: list[RunTargetItem] = []
        for entry, pending in zip(chunk, after, strict=True):
            key = str(entry.database_id)
            known = progress.targets.get(key)
            if pending or key in queued:
                items.append(_item(entry, ItemState.PENDING))
            elif known is not None:
                items.append(_item(entry, ItemState(known.state.value), known))
            else:
                items.append(_item(entry, ItemState.DONE))
        if reads:
            unknown = [i.database_id for i in items if i.state is ItemState.DONE]
            read = await outcomes(unknown) if unknown else {}
            for item in items:
                if item.state is ItemState.DONE:
                    outcome = read.get(item.database_id)
                    if outcome is None:
                        complete = False
                    else:
                        item.state = ItemState(outcome.value)
        for entry, item in zip(chunk, items, strict=True):
            if _matches(view, item.state):
                found.append((item, entry.cursor))
                if len(found) > limit:
                    return _page(
                        progress, view, found, limit, complete=complete and not failed_unnamed
                    )
        walked += len(chunk)
        at = chunk[-1].cursor
        if len(chunk) < size or (view is not TargetsFilter.ALL and any(after)):
            # The selector's end, or (for a finished state) its unresolved part: nothing more.
            return _page(progress, view, found, limit, complete=complete and not failed_unnamed)
        if walked >= budget:
            return _page(
                progress, view, found, limit, more_at=at, complete=complete and not failed_unnamed
            )
