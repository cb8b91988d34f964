"""Fleet activities: resolve a selector to targets, one page at a time."""

from __future__ import annotations

from temporalio import activity

from common.catalog.databases import DatabaseRepository
from models.fleet import TargetPage, TargetPageRequest


class FleetActivities:
    """Reads the catalog for fleet runs (the per-target work is ``run_target_batch``)."""

    def __init__(self, databases: DatabaseRepository) -> None:
        self._databases = databases

    @activity.defn(name="resolve_targets")
    async def resolve_targets(self, request: TargetPageRequest) -> TargetPage:
        """The next page of targets for ``request.selector`` (ordered by name), so a run over
        100,000 targets never holds them all in one payload."""
        selector = request.selector
        if selector.database_ids:
            start = int(request.after or 0)
            chunk = selector.database_ids[start : start + request.limit]
            end = start + len(chunk)
            return TargetPage(
                database_ids=chunk,
                after=str(end) if end < len(selector.database_ids) else None,
            )
        page = await self._databases.list(
            labels=selector.labels, limit=request.limit, cursor=request.after
        )
        return TargetPage(database_ids=[d.id for d in page.items], after=page.next_cursor)
