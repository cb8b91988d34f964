"""``MigrateFleetWorkflow``: one durable run of a migration set over many targets.

A sliding window of batch activities (``batch_size`` targets each) keeps ``concurrency`` targets
in flight; with ``batch_connections`` a batch runs that many of its targets at a time and fills
only that much of the window (fewer activities per run). ``pause`` stops new targets (in-flight ones finish), ``resume`` continues, ``cancel``
starts nothing new and ends the run once in-flight targets have finished (nothing is
interrupted half-way: every version commits with its ledger row or not at all). The ``progress``
query reads the live state; ``set_concurrency`` changes the window. The run continues-as-new well
before Temporal's history limits, carrying its state.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.fleet import FleetActivities
    from activities.migrations import MigrationActivities
    from models.fleet import (
        FleetCounts,
        FleetProgress,
        FleetRunInput,
        FleetRunResult,
        FleetState,
        FleetStatus,
        TargetBatchInput,
        TargetPageRequest,
        TargetProgress,
        TargetState,
    )
    from models.migrations import TargetRunKind, TargetRunResult
    from models.run_state import BUDGET_PAUSE, outcome, pause_reason
    from models.webhooks import EventOut, WebhookEventType
    from workflows.migrations import TARGET_RETRY
    from workflows.webhooks import emit

STATUS_KEY = SearchAttributeKey.for_keyword("TenantflowStatus")
# Continue-as-new long before the 51,200-event limit; a batch costs about 6 events.
HISTORY_EVENTS_BEFORE_CONTINUE = 10_000
# ... and by size (FleetRunInput.continue_after_bytes): runs before it continued at 4 MB only.
CONTINUE_BY_BYTES_PATCH = "continue-by-history-bytes"
RESOLVE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=10)
# Histories recorded before runs published webhook events replay without them.
EMIT_EVENTS_PATCH = "emit-webhook-events"
# Runs before repeatable migrations existed recorded targets without them.
REPORT_REPEATABLES_PATCH = "report-repeatables"
# Runs before compact state kept every target in the state (and were capped at 15,000).
COMPACT_STATE_PATCH = "compact-run-state"
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


@workflow.defn(name="MigrateFleetWorkflow")
class MigrateFleetWorkflow:
    """See the module docstring."""

    @workflow.init
    def __init__(self, params: FleetRunInput) -> None:
        # State exists before any signal, update or query can reach the run.
        self._params: FleetRunInput | None = params
        self._state: FleetState | None = params.state or FleetState(
            started_at=workflow.now(), concurrency=params.concurrency
        )
        self._running = 0
        # Settle-only batches in flight and their targets (also counted in _running); with lanes
        # (SETTLE_LANES_PATCH) they do not fill the window that ordinary batches use.
        self._settle_batches = 0
        self._settle_running = 0
        self._settle_lanes = False
        # Targets of batches with batch_connections beyond the connections they hold: in
        # flight (counted in _running) but not filling the window.
        self._beyond = 0
        self._started = (
            self._state.started
            if self._state.compact
            else sum(1 for t in self._state.targets.values() if t.state is not TargetState.PENDING)
        )
        self._wake = False
        self._status = FleetStatus.RUNNING
        self._pause_announced = False
        self._pauses = 0
        self._batches_done = 0  # in this run (since the last continue-as-new)

    # -- messages ---------------------------------------------------------------------------
    @workflow.signal
    def pause(self) -> None:
        """Start no new target; in-flight ones finish."""
        state = self._require_state()
        state.paused, state.paused_reason = True, "paused by an operator"
        self._wake = True

    @workflow.signal
    def resume(self) -> None:
        """Continue after a pause (by an operator, the canary or the failure budget)."""
        state = self._require_state()
        if state.paused_reason and state.paused_reason.startswith(BUDGET_PAUSE):
            # Resuming a budget pause means "go on until the budget's worth of new failures".
            state.budget_failed_before = self._counts().failed
        state.paused, state.paused_reason = False, None
        self._wake = True

    @workflow.signal
    def cancel(self) -> None:
        """Start nothing new; end once in-flight targets have finished."""
        self._require_state().cancel_requested = True
        self._wake = True

    @workflow.update
    def set_concurrency(self, concurrency: int) -> int:
        """Change how many targets may be in flight; returns the new value."""
        self._require_state().concurrency = concurrency
        self._wake = True
        return concurrency

    @set_concurrency.validator
    def _validate_concurrency(self, concurrency: int) -> None:
        if not 1 <= concurrency <= 1000:
            raise ValueError("concurrency must be between 1 and 1000")

    @workflow.query
    def progress(self) -> FleetProgress:
        """Totals, counts per state, every target's state, rate and ETA."""
        # A query's answer is not part of the history: replays are unaffected.
        return FleetProgress.of(
            self._require_params(),
            self._require_state(),
            self._counts(),
            self._current_status(),
            workflow.now(),
        )

    @workflow.query
    def spec(self) -> FleetRunInput:
        """The run's input without its state: the selector and options it was started with."""
        return self._require_params().model_copy(update={"state": None})

    # -- the run ------------------------------------------------------------------------------
    @workflow.run
    async def run(self, params: FleetRunInput) -> FleetRunResult:
        """Drive the window until every target is done, or the run is cancelled."""
        state = self._require_state()
        if params.state is None and workflow.patched(COMPACT_STATE_PATCH):
            state.compact, state.counts = True, FleetCounts()
        tasks: set[asyncio.Task[None]] = set()
        while True:
            continue_soon = (
                workflow.info().get_current_history_length() > (HISTORY_EVENTS_BEFORE_CONTINUE)
                or workflow.info().is_continue_as_new_suggested()
                or self._history_too_large()
            )
            if not (state.paused or state.cancel_requested or continue_soon):
                await self._fill(tasks)
            self._check_canary()
            if not tasks:
                finished = not state.queue and not state.checked and state.selector_exhausted
                if state.cancel_requested or finished:
                    break
                if continue_soon:
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    state.continued += 1
                    workflow.continue_as_new(params.model_copy(update={"state": state}))
            await self._announce_pause()
            self._publish_status()
            await workflow.wait_condition(lambda: self._wake)
            self._wake = False
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._status = FleetStatus.CANCELLED if state.cancel_requested else FleetStatus.COMPLETED
        if not state.cancel_requested:
            # A pause that came with the last target has nothing left to hold back.
            state.paused, state.paused_reason = False, None
        self._publish_status()
        if not state.cancel_requested and workflow.patched(EMIT_EVENTS_PATCH):
            kind = WebhookEventType.MIGRATION_COMPLETED
            if self._counts().failed:
                kind = WebhookEventType.MIGRATION_FAILED
            await emit(self._event(kind, kind.value.split(".")[1]))
        return FleetRunResult(
            run_id=params.run_id,
            status=self._status,
            counts=self._counts(),
            failed=state.failed
            if state.compact
            else {k: v for k, v in state.targets.items() if v.state is TargetState.FAILED},
            failed_not_listed=state.failed_not_listed,
            started_at=state.started_at,
            finished_at=workflow.now(),
        )

    async def _announce_pause(self) -> None:
        """Publish ``migration.paused`` once per pause (operator, canary or failure budget)."""
        state = self._require_state()
        if not state.paused:
            self._pause_announced = False
            return
        if self._pause_announced:
            return
        self._pause_announced = True
        # Replay-safe (nothing recorded while replaying) and no command: histories unchanged.
        workflow.metric_meter().create_counter(
            "tenantflow_runs_paused", "Fleet runs paused, by reason."
        ).add(1, {"reason": pause_reason(state.paused_reason)})
        if workflow.patched(EMIT_EVENTS_PATCH):
            self._pauses += 1
            # The Temporal run id keeps ids distinct across continue-as-new; replays repeat it.
            suffix = f"paused-{workflow.info().run_id[:8]}-{self._pauses}"
            await emit(self._event(WebhookEventType.MIGRATION_PAUSED, suffix))

    def _event(self, kind: WebhookEventType, suffix: str) -> EventOut:
        """A webhook event about this run, with an id that a retry or replay repeats."""
        params, state = self._require_params(), self._require_state()
        counts = self._counts()
        return EventOut(
            id=f"migration-{params.run_id}-{suffix}"[:128],
            type=kind,
            subject=f"migrate-fleet-{params.run_id}",
            data={
                "run_id": params.run_id,
                "set_name": params.set_name,
                "target_version": params.target_version,
                "status": self._current_status().value,
                "paused_reason": state.paused_reason,
                "dry_run": params.dry_run,
                "counts": counts.model_dump(mode="json"),
            },
            time=workflow.now(),
        )

    def _history_too_large(self) -> bool:
        """Continue-as-new once the history passes `continue_after_bytes` (1 MB by default):
        a worker that lost the run from its cache replays the whole history on its next task,
        which took 17 s at 4 MB on a 50,000-target run. Only after a batch of this run finished,
        so a small limit cannot loop; the patch is asked only when it matters, so runs that
        never reach the size record no marker."""
        return (
            self._batches_done > 0
            and workflow.info().get_current_history_size()
            > self._require_params().continue_after_bytes
            and workflow.patched(CONTINUE_BY_BYTES_PATCH)
        )

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

    def _check_canary(self) -> None:
        params, state = self._require_params(), self._require_state()
        if not params.canary or state.canary_done or self._running:
            return
        needed = min(params.canary, state.resolved) if state.selector_exhausted else params.canary
        if self._started < needed:
            return
        state.canary_done = True
        if self._counts().failed:
            state.paused, state.paused_reason = True, "canary failed; resume to continue anyway"
        elif params.canary_wait_for_resume:
            state.paused, state.paused_reason = True, "canary succeeded; resume to continue"

    def _record(
        self, batch: list[uuid.UUID], results: list[TargetRunResult], *, settle: bool
    ) -> None:
        """A compact run's batch results: counted, deferred (settle-only: work left), and the
        choice of settling the queue first (every target of a batch was up to date) or not
        (half a settle-only batch had work)."""
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

    # -- helpers ------------------------------------------------------------------------------
    def _counts(self) -> FleetCounts:
        state = self._require_state()
        if state.counts is not None:
            return state.counts.model_copy()
        counts = FleetCounts()
        for target in self._require_state().targets.values():
            setattr(counts, target.state.value, getattr(counts, target.state.value) + 1)
        return counts

    def _current_status(self) -> FleetStatus:
        state = self._require_state()
        if self._status in (FleetStatus.COMPLETED, FleetStatus.CANCELLED):
            return self._status
        if state.cancel_requested:
            return FleetStatus.CANCELLING
        return FleetStatus.PAUSED if state.paused else FleetStatus.RUNNING

    def _publish_status(self) -> None:
        status = self._current_status().value
        current = workflow.info().typed_search_attributes.get(STATUS_KEY)
        if current != status:
            workflow.upsert_search_attributes([STATUS_KEY.value_set(status)])

    def _require_params(self) -> FleetRunInput:
        assert self._params is not None
        return self._params

    def _require_state(self) -> FleetState:
        assert self._state is not None
        return self._state
