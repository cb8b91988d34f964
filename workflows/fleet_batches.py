"""The batch window of ``MigrateFleetWorkflow`` (``workflows.fleet``): which targets go into
the next batch activity and on how many connections, how a batch's results land in the run's
state, and the failure budget judged after each batch. The run's lifecycle, its messages and
its events stay in ``workflows.fleet``; this base class holds no state of its own beyond the
counters the workflow's ``__init__`` sets.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.fleet import FleetActivities
    from activities.migrations import MigrationActivities
    from models.fleet import (
        FleetCounts,
        FleetRunInput,
        FleetState,
        TargetBatchInput,
        TargetPageRequest,
        TargetProgress,
        TargetState,
    )
    from models.migrations import TargetRunKind, TargetRunResult
    from models.run_state import BUDGET_PAUSE, outcome
    from workflows.migrations import TARGET_RETRY

RESOLVE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=10)
# Runs before repeatable migrations existed recorded targets without them.
REPORT_REPEATABLES_PATCH = "report-repeatables"
# Runs before settle-only batches ran every target through a batch of `batch_size`.
SETTLE_PATCH = "settle-up-to-date"
# A settle-only batch: this many targets per connection of the window, at most MAX_SETTLE.
SETTLE_PER_CONNECTION = 8
MAX_SETTLE = 500
# Runs before settle-only batches ran side by side settled one batch at a time, alone: 10,000
# up-to-date schemas waited on 20 batches in a row with half the machine idle.
SETTLE_LANES_PATCH = "settle-side-by-side"
# Settle-only batches at once; they share the window's connections between them.
SETTLE_LANES = 4


class FleetBatches:
    """The window's bookkeeping, mixed into ``MigrateFleetWorkflow``."""

    _params: FleetRunInput | None
    _state: FleetState | None
    _running: int  # targets in flight, in every kind of batch
    # Settle-only batches in flight and their targets (also counted in _running); with lanes
    # (SETTLE_LANES_PATCH) they do not fill the window that ordinary batches use.
    _settle_batches: int
    _settle_running: int
    _settle_lanes: bool
    # Targets of batches with batch_connections beyond the connections they hold: in flight
    # (counted in _running) but not filling the window.
    _beyond: int
    _started: int
    _batches_done: int  # in this run (since the last continue-as-new)
    _wake: bool

    async def _fill(self, tasks: set[asyncio.Task[None]]) -> None:
        params, state = self._require_params(), self._require_state()
        while self._busy() < state.concurrency and not state.paused:
            allowed = state.concurrency - self._busy()
            if params.canary and not state.canary_done:
                allowed = min(allowed, params.canary - self._started)
                if allowed <= 0:
                    return
            if state.checked:  # settled as having work (or handed back): they go first
                size, connections = self._batch_size(allowed, len(state.checked))
                batch, state.checked = state.checked[:size], state.checked[size:]
                self._launch(batch, tasks, connections=connections)
                continue
            if not state.queue:
                if state.selector_exhausted:
                    return
                await self._resolve_page()
                # A cancel or pause that came while the page loaded stops the fill; old
                # histories went on starting targets, so they replay the old way.
                if workflow.patched("fill-stops-after-page-load") and (
                    state.cancel_requested or state.paused
                ):
                    return
                continue
            if state.settling:
                # Settle-only batches run without ordinary ones: together they read up to
                # `concurrency` ledgers at once, as many connections as the window allows. Up to
                # SETTLE_LANES of them side by side, sharing the connections; before the patch,
                # one at a time.
                if self._running > self._settle_running:
                    return
                lanes = 1
                if self._running == 0 or self._settle_lanes:
                    self._settle_lanes = self._settle_lanes or workflow.patched(SETTLE_LANES_PATCH)
                    if self._settle_lanes:
                        lanes = max(1, min(SETTLE_LANES, state.concurrency))
                if self._settle_batches >= lanes:
                    return
                connections = max(1, state.concurrency // lanes)
                size = min(connections * SETTLE_PER_CONNECTION, MAX_SETTLE, len(state.queue))
                batch, state.queue = state.queue[:size], state.queue[size:]
                self._launch(batch, tasks, settle=True, connections=connections)
                continue
            size, connections = self._batch_size(allowed, len(state.queue))
            batch, state.queue = state.queue[:size], state.queue[size:]
            self._launch(batch, tasks, connections=connections)

    def _batch_size(self, allowed: int, available: int) -> tuple[int, int | None]:
        """The next ordinary batch: how many targets, and on how many connections (None: all
        at once). With batch_connections (not for the canary) a batch of batch_size takes only
        its connections of the window's ``allowed``."""
        params, state = self._require_params(), self._require_state()
        per_batch = params.batch_connections
        if (
            per_batch is not None
            and per_batch < params.batch_size
            and state.compact
            and (not params.canary or state.canary_done)
        ):
            size = min(params.batch_size, available)
            return size, min(per_batch, allowed, size)
        return min(params.batch_size, allowed, available), None

    def _busy(self) -> int:
        """Targets in flight that fill the window: all of them, except settle-only batches' once
        they run side by side (SETTLE_LANES_PATCH; old histories replay the old count) and the
        ones a batch with batch_connections holds beyond its connections."""
        settling = self._settle_running if self._settle_lanes else 0
        return self._running - settling - self._beyond

    def _launch(
        self,
        batch: list[uuid.UUID],
        tasks: set[asyncio.Task[None]],
        *,
        settle: bool = False,
        connections: int | None = None,
    ) -> None:
        state = self._require_state()
        # An ordinary batch on fewer connections than targets fills only its connections.
        beyond = 0 if settle or connections is None else len(batch) - connections
        if state.compact:
            state.start(batch)
        else:
            for database_id in batch:
                state.targets[str(database_id)] = TargetProgress(state=TargetState.RUNNING)
        self._running += len(batch)
        self._started += len(batch)
        if settle:
            self._settle_batches += 1
            self._settle_running += len(batch)
        self._beyond += beyond
        task = asyncio.create_task(
            self._run_batch(batch, settle=settle, connections=connections, beyond=beyond)
        )
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _resolve_page(self) -> None:
        params, state = self._require_params(), self._require_state()
        page = await workflow.execute_activity_method(
            FleetActivities.resolve_targets,
            TargetPageRequest(selector=params.selector, after=state.after),
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=RESOLVE_RETRY,
        )
        if state.compact:
            state.queue_page(page.database_ids)
        else:
            for database_id in page.database_ids:
                if str(database_id) not in state.targets:
                    state.targets[str(database_id)] = TargetProgress(state=TargetState.PENDING)
                    state.queue.append(database_id)
                    state.resolved += 1
        state.after = page.after
        state.selector_exhausted = page.after is None

    async def _run_batch(
        self,
        batch: list[uuid.UUID],
        *,
        settle: bool = False,
        connections: int | None = None,
        beyond: int = 0,
    ) -> None:
        params, state = self._require_params(), self._require_state()
        try:
            results = await workflow.execute_activity_method(
                MigrationActivities.run_target_batch,
                TargetBatchInput(
                    run_id=params.run_id,
                    set_name=params.set_name,
                    kind=params.kind,
                    target_version=params.target_version,
                    # adopt only; None (every other run) is the field's default: replay-safe.
                    adopt_from=params.adopt_from,
                    database_ids=batch,
                    dry_run=params.dry_run,
                    lock_timeout_ms=params.lock_timeout_ms,
                    statement_timeout_ms=params.statement_timeout_ms,
                    # A compact run's rollback only; None otherwise (the default: replay-safe).
                    rollback_of=params.rollback_of,
                    # Settle-only batches exist since SETTLE_PATCH; False is the default.
                    settle_only=settle,
                    # A settle-only batch's share of the window, or an ordinary batch's
                    # batch_connections; None (the default) for the others: replay-safe.
                    connections=connections,
                    # Only batches with batch_connections run targets after others finished.
                    stop_at_failure=beyond > 0,
                ),
                start_to_close_timeout=timedelta(hours=6),
                heartbeat_timeout=timedelta(seconds=params.heartbeat_timeout_seconds),
                retry_policy=TARGET_RETRY,
            )
            with_repeatables = workflow.patched(REPORT_REPEATABLES_PATCH)
            if state.compact:
                self._record(batch, results, settle=settle)
            else:
                for result in results:
                    state.targets[str(result.database_id)] = outcome(result, with_repeatables)
        except ActivityError as exc:
            landed = state.land(batch) if state.compact else set()
            for database_id in batch:
                failed = TargetProgress(
                    state=TargetState.FAILED, error=f"activity failed: {exc.cause or exc}"[:1000]
                )
                if state.compact:
                    state.finish(database_id, failed, in_flight=database_id in landed)
                else:
                    state.targets[str(database_id)] = failed
        finally:
            self._running -= len(batch)
            self._beyond -= beyond
            if settle:
                self._settle_batches -= 1
                self._settle_running -= len(batch)
            self._batches_done += 1
            self._check_budget()
            self._wake = True

    def _record(
        self, batch: list[uuid.UUID], results: list[TargetRunResult], *, settle: bool
    ) -> None:
        """A compact run's batch results: counted, deferred (settle-only: work left; a batch
        stopped at a failure: not started), and the choice of settling the queue first (every
        target of a batch was up to date) or not (half a settle-only batch had work)."""
        params, state = self._require_params(), self._require_state()
        reported = {result.database_id: result for result in results}
        landed = state.land(batch)
        deferred = 0
        for database_id in batch:
            result = reported.get(database_id)
            if result is not None and result.deferred:
                state.defer(database_id, in_flight=database_id in landed)
                deferred += 1
                continue
            state.finish(
                database_id,
                outcome(result, True)
                if result is not None
                else TargetProgress(state=TargetState.FAILED, error="the batch reported no result"),
                in_flight=database_id in landed,
            )
        if settle:
            state.settling = deferred * 2 <= len(batch)
        elif (
            not state.settling
            and params.kind is TargetRunKind.APPLY
            and not params.dry_run
            and (not params.canary or state.canary_done)
            and results
            and all(r.failure is None and not r.applied and not r.planned for r in results)
            and workflow.patched(SETTLE_PATCH)
        ):
            state.settling = True

    def _check_budget(self) -> None:
        params, state = self._require_params(), self._require_state()
        failed = self._counts().failed
        if state.paused:
            return
        if workflow.patched("budget-counts-since-resume-over-total"):
            # Failures since the last budget resume; a percentage only over the whole fleet.
            over = params.failure_budget.exceeded(
                failed - state.budget_failed_before,
                state.resolved,
                total_known=state.selector_exhausted,
            )
        else:
            over = params.failure_budget.exceeded(failed, state.resolved)
        if over:
            state.paused = True
            state.paused_reason = f"{BUDGET_PAUSE}: {failed} of {state.resolved} failed"
            workflow.logger.warning(
                "ALERT fleet run %s paused: %s", params.run_id, state.paused_reason
            )

    def _counts(self) -> FleetCounts:
        state = self._require_state()
        if state.counts is not None:
            return state.counts.model_copy()
        counts = FleetCounts()
        for target in self._require_state().targets.values():
            setattr(counts, target.state.value, getattr(counts, target.state.value) + 1)
        return counts

    def _require_params(self) -> FleetRunInput:
        assert self._params is not None
        return self._params

    def _require_state(self) -> FleetState:
        assert self._state is not None
        return self._state
