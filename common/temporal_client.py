"""Builds every Temporal client, so the gateway, worker and CLI agree on the wire format."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime
from temporalio.service import RPCError

from common.codec import build_data_converter
from common.errors import DependencyUnavailable
from common.settings import CryptoSettings, TemporalSettings


async def connect_temporal(
    settings: TemporalSettings,
    *,
    crypto: CryptoSettings | None = None,
    lazy: bool = False,
    interceptors: Sequence[Interceptor] = (),
    runtime: Runtime | None = None,
) -> Client:
    """Connect to Temporal with tenantflow's data converter (encrypting payloads when
    ``crypto.encrypt_payloads`` is on).

    ``lazy`` defers the first RPC until the client is used, so a gateway can start (and report
    itself not ready) while Temporal is still down. ``interceptors`` (tracing's, when on) apply to
    the client's calls and to every worker built on the client. ``runtime``: the worker's, whose
    metrics go to its metrics endpoint (``common.telemetry.metrics``); Temporal's default if None.
    """
    try:
        return await Client.connect(
            settings.address,
            namespace=settings.namespace,
            data_converter=(
                build_data_converter(crypto) if crypto is not None else pydantic_data_converter
            ),
            tls=settings.tls,
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            lazy=lazy,
            interceptors=interceptors,
            runtime=runtime,
        )
    except (RuntimeError, RPCError) as exc:
        raise DependencyUnavailable(
            f"Temporal is unreachable at {settings.address}",
            details={
                "dependency": "temporal",
                "address": settings.address,
                "cause": type(exc).__name__,
            },
        ) from None


async def ping_temporal(client: Client, within_seconds: float) -> None:
    """Raise ``DependencyUnavailable`` unless Temporal's frontend reports itself serving."""
    try:
        async with asyncio.timeout(within_seconds):
            serving = await client.service_client.check_health(
                timeout=timedelta(seconds=within_seconds)
            )
    except Exception as exc:  # RPCError, connection RuntimeError, TimeoutError
        raise DependencyUnavailable(
            "Temporal does not answer",
            details={"dependency": "temporal", "cause": type(exc).__name__},
        ) from None
    if not serving:
        raise DependencyUnavailable("Temporal reports it is not serving")
