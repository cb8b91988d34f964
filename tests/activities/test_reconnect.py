"""A lost target connection is retried for a while with growing pauses; anything else is not."""

from __future__ import annotations

import asyncpg
import pytest

from activities.reconnect import MAX_PAUSE, RECONNECT_SECONDS, connection_lost, reconnect_pause


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "refused"),
        ConnectionResetError(104, "reset"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.InterfaceError("cannot call Connection.execute(): connection is closed"),
    ],
)
def test_a_lost_or_refused_connection_is_retried(exc: BaseException) -> None:
    assert connection_lost(exc)
    assert reconnect_pause(exc, 0.0) == 0.5


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.InvalidPasswordError("password authentication failed"),
        asyncpg.InvalidCatalogNameError('database "x" does not exist'),
        TimeoutError(),
        OSError(-2, "Name or service not known"),
        asyncpg.InterfaceError("invalid input for query argument $1: 'x' (an int is required)"),
    ],
)
def test_other_errors_fail_the_target_at_once(exc: BaseException) -> None:
    assert not connection_lost(exc)
    assert reconnect_pause(exc, 0.0) is None


def test_the_pauses_double_up_to_a_cap_and_stop_at_the_budget() -> None:
    waited, pauses = 0.0, []
    while (pause := reconnect_pause(ConnectionRefusedError(), waited)) is not None:
        pauses.append(pause)
        waited += pause
    assert pauses[:5] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert max(pauses) == MAX_PAUSE
    assert waited == RECONNECT_SECONDS
