"""A compact fleet run's state: bounded whatever the fleet's size (models.run_state)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from models.fleet import FleetRunInput, FleetSelector
from models.run_state import (
    KEPT_ERROR_CHARS,
    MAX_FAILED_KEPT,
    FleetCounts,
    FleetState,
    TargetProgress,
    TargetState,
)

# Temporal refuses a payload above 2 MB; a run's state must stay far below it.
PAYLOAD_LIMIT = 2 * 1024 * 1024


def compact() -> FleetState:
    return FleetState(
        started_at=datetime(2026, 12, 2, tzinfo=UTC), compact=True, counts=FleetCounts()
    )


def ids(n: int) -> list[uuid.UUID]:
    return [uuid.UUID(int=i + 1) for i in range(n)]


def test_counts_follow_targets_from_queue_to_finish() -> None:
    state = compact()
    page = ids(10)
    state.queue_page(page)
    assert (state.resolved, state.counts) == (10, FleetCounts(pending=10))
    batch, state.queue = state.queue[:4], state.queue[4:]
    state.start(batch)
    assert state.counts == FleetCounts(pending=6, running=4)
    assert state.in_flight == batch
    assert state.land(batch[:3]) == set(batch[:3])
    for database_id, progress in zip(
        batch[:3],
        [
            TargetProgress(state=TargetState.SUCCEEDED, to_version="2"),
            TargetProgress(state=TargetState.UP_TO_DATE, to_version="2"),
            TargetProgress(state=TargetState.FAILED, error="boom"),
        ],
        strict=True,
    ):
        state.finish(database_id, progress, in_flight=True)
    assert state.counts == FleetCounts(pending=6, running=1, succeeded=1, up_to_date=1, failed=1)
    assert state.in_flight == [batch[3]]
    known = state.known_targets()
    assert known[str(batch[3])].state is TargetState.RUNNING
    assert known[str(batch[2])] == TargetProgress(state=TargetState.FAILED, error="boom")
    assert known[str(batch[0])].state is TargetState.SUCCEEDED


def test_failed_targets_are_kept_up_to_the_bound_and_the_rest_counted() -> None:
    state = compact()
    state.queue_page(ids(20))
    state.start(state.queue)
    landed = state.land(ids(20))
    for database_id in ids(20):
        state.finish(
            database_id,
            TargetProgress(state=TargetState.FAILED, error="x" * 5000),
            max_failed=3,
            recent=5,
            in_flight=database_id in landed,
        )
    assert state.counts.failed == 20 and state.counts.running == 0  # type: ignore[union-attr]
    assert list(state.failed) == [str(i) for i in ids(3)]  # the first failures, with errors
    assert state.failed_not_listed == 17
    assert all(len(t.error or "") == KEPT_ERROR_CHARS for t in state.failed.values())
    assert list(state.recent) == [str(i) for i in ids(20)[-5:]]  # the last five, in order


def test_a_hundred_thousand_targets_keep_the_state_small() -> None:
    """100,000 targets, a tenth of them failed with long errors: the state that rides in
    continue-as-new and the progress query's answer stay far below 2 MB."""
    state = compact()
    every = ids(100_000)
    for start in range(0, len(every), 500):
        state.queue_page(every[start : start + 500])
        while state.queue:
            batch, state.queue = state.queue[:16], state.queue[16:]
            state.start(batch)
            state.land(batch)
            for database_id in batch:
                failed = database_id.int % 10 == 0
                state.finish(
                    database_id,
                    TargetProgress(
                        state=TargetState.FAILED if failed else TargetState.SUCCEEDED,
                        error=f"sql_error at version 3: {'relation already exists ' * 40}"
                        if failed
                        else None,
                        from_version="2",
                        to_version="2" if failed else "3",
                    ),
                    in_flight=True,
                )
    assert state.counts == FleetCounts(succeeded=90_000, failed=10_000)
    assert len(state.failed) == MAX_FAILED_KEPT
    assert state.failed_not_listed == 10_000 - MAX_FAILED_KEPT
    carried = FleetRunInput(
        run_id="r", set_name="s", selector=FleetSelector(all=True), state=state
    ).model_dump_json()
    assert len(carried) < PAYLOAD_LIMIT / 4, len(carried)  # about 300 KB
    # The state survives continue-as-new as it was.
    again = FleetRunInput.model_validate_json(carried).state
    assert again == state


def test_a_selector_names_each_target_once() -> None:
    [a, b] = ids(2)
    assert FleetSelector(database_ids=[a, b, a, b, a]).database_ids == [a, b]


def test_a_landed_batch_leaves_flight_in_one_pass_and_the_rest_keep_their_order() -> None:
    """Four settle-only batches of 500 in flight: one batch lands, the others stay in flight in
    their order, and its targets finish or are deferred with the counts right."""
    state = compact()
    state.queue_page(ids(2000))
    batches = [state.queue[i : i + 500] for i in range(0, 2000, 500)]
    state.queue = []
    for batch in batches:
        state.start(batch)
    landing = batches[1]
    landed = state.land([*landing, uuid.UUID(int=99_999)])  # one id never in flight
    assert landed == set(landing)
    assert state.in_flight == batches[0] + batches[2] + batches[3]
    for database_id in landing[:400]:
        state.finish(
            database_id,
            TargetProgress(state=TargetState.UP_TO_DATE, to_version="2"),
            in_flight=database_id in landed,
        )
    for database_id in landing[400:]:
        state.defer(database_id, in_flight=database_id in landed)
    assert state.counts == FleetCounts(pending=100, running=1500, up_to_date=400)
    assert state.checked == landing[400:]
    assert state.started == 1900
    # A finish of a target no batch had in flight counts it without touching the others.
    state.finish(
        uuid.UUID(int=99_999), TargetProgress(state=TargetState.FAILED, error="x"), in_flight=False
    )
    assert (state.counts.running, state.counts.failed, len(state.in_flight)) == (1500, 1, 1500)
