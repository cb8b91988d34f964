"""Dependencies as ``Annotated`` aliases: a route declares ``temporal: TemporalDep`` and gets it."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from temporalio.client import Client

from common.errors import DependencyUnavailable
from common.settings import Settings


async def get_settings_dep(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


async def get_temporal(request: Request) -> Client:
    """The Temporal client opened in the lifespan."""
    client: Client = request.app.state.temporal
    return client


def temporal_unreachable(
    exc: RuntimeError, message: str = "Temporal did not answer"
) -> DependencyUnavailable:
    """The lazy Temporal client's connect failing (a gateway started while Temporal was away
    raises ``RuntimeError`` on each call until it connects): 503, as an ``RPCError`` is."""
    return DependencyUnavailable(
        message, details={"dependency": "temporal", "cause": str(exc)[:300]}
    )


async def get_catalog(request: Request) -> asyncpg.Pool:
    """The catalog pool opened in the lifespan."""
    pool: asyncpg.Pool = request.app.state.catalog
    return pool


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
CatalogDep = Annotated[asyncpg.Pool, Depends(get_catalog)]
