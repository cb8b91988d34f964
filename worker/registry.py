"""What a tenantflow worker runs: the workflow classes and the activity objects bound to pools."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from activities.system import SystemActivities
from workflows.system import SystemCheckWorkflow

WORKFLOWS: Sequence[type] = (SystemCheckWorkflow,)


def build_activities(catalog: asyncpg.Pool) -> list[Callable[..., Any]]:
    """The bound activity methods, each holding the dependencies it needs."""
    system = SystemActivities(catalog)
    return [system.check_catalog]
