"""``MigrateFleetWorkflow``: one durable run of a migration set over many targets.

A sliding window of batch activities (``batch_size`` targets each) keeps ``concurrency`` targets
in flight; with ``batch_connections`` a batch runs that many of its targets at a time and fills
only that much of the window (fewer activities per run; ``workflows.fleet_batches``). ``pause``
stops new targets (in-flight ones finish), ``resume`` continues, ``cancel`` starts nothing new
and ends the run once in-flight targets have finished (nothing is interrupted half-way: every
version commits with its ledger row or not at all). The ``progress`` query reads the live
state; ``set_concurrency`` changes the window. The run continues-as-new well before Temporal's
history limits, carrying its state.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.common import SearchAttributeKey

with workflow.unsafe.imports_passed_through():
    from models.fleet import (
        FleetCounts,
        FleetProgress,
        FleetRunInput,
        FleetRunResult,
        FleetState,
        FleetStatus,
        TargetState,
    )
    from models.run_state import BUDGET_PAUSE, pause_reason
    from models.webhooks import EventOut, WebhookEventType
    from workflows.fleet_batches import FleetBatches
    from workflows.webhooks import emit

STATUS_KEY = SearchAttributeKey.for_keyword("TenantflowStatus")
# Continue-as-new long before the 51,200-event limit; a batch costs about 6 events.
HISTORY_EVENTS_BEFORE_CONTINUE = 10_000
# ... and by size (FleetRunInput.continue_after_bytes): runs before it continued at 4 MB only.
CONTINUE_BY_BYTES_PATCH = "continue-by-history-bytes"
# Histories recorded before runs published webhook events replay without them.
EMIT_EVENTS_PATCH = "emit-webhook-events"
# Runs before compact state kept every target in the state (and were capped at 15,000).
COMPACT_STATE_PATCH = "compact-run-state"


@workflow.defn(name="MigrateFleetWorkflow")
class MigrateFleetWorkflow(FleetBatches):
    """See the module docstring; the batch window is ``workflows.fleet_batches``."""

    @workflow.init
    def __init__(self, params: FleetRunInput) -> None:
        # State exists before any signal, update or query can reach the run.
        self._params: FleetRunInput | None = params
        self._state: FleetState | None = params.state or FleetState(
            started_at=workflow.now(), concurrency=params.concurrency
        )
        # The window's counters (workflows.fleet_batches).
        self._running = 0
        self._settle_batches = 0
        self._settle_running = 0
        self._settle_lanes = False
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

    # -- helpers ------------------------------------------------------------------------------
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
