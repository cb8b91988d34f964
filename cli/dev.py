"""``tenantflow dev``: the whole stack on one machine, from wheels, in the foreground.

Starts PostgreSQL and Temporal (data under ``TENANTFLOW_DEV__DATA_DIR``, reused by the next start),
then the worker and the gateway as child processes, waits until the gateway is ready, prints the
URLs and runs until Ctrl-C or SIGTERM. Stopping stops every process it started.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from types import FrameType

import httpx
import typer

from cli.dev_issuer import DevIssuer, dev_issuer_url
from cli.stack import EmbeddedPostgres, ManagedProcess, ensure_ports_free
from cli.temporal_server import TemporalDevServer
from common.errors import DependencyUnavailable
from common.settings import Settings

# The worker's Prometheus endpoint in the dev stack, unless
# TENANTFLOW_TELEMETRY__WORKER_METRICS_PORT names one (its default, 0, serves none; compose uses
# the same port).
DEV_WORKER_METRICS_PORT = 9464


def worker_metrics_port(settings: Settings) -> int:
    """The port the dev stack's worker serves ``/metrics`` on."""
    return settings.telemetry.worker_metrics_port or DEV_WORKER_METRICS_PORT


def _child_env(
    settings: Settings, catalog_dsn: str, temporal_address: str, issuer: DevIssuer
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "TENANTFLOW_AUTH__ISSUER_URL": issuer.issuer_url,
            "TENANTFLOW_AUTH__CLIENT_SECRET": issuer.client_secret(),
            "TENANTFLOW_PROFILE": settings.profile.value,
            "TENANTFLOW_CATALOG__DSN": catalog_dsn,
            "TENANTFLOW_TEMPORAL__ADDRESS": temporal_address,
            "TENANTFLOW_TEMPORAL__NAMESPACE": settings.temporal.namespace,
            "TENANTFLOW_TEMPORAL__TASK_QUEUE": settings.temporal.task_queue,
            "TENANTFLOW_GATEWAY__HOST": settings.gateway.host,
            "TENANTFLOW_GATEWAY__PORT": str(settings.gateway.port),
        }
    )
    env["TENANTFLOW_TELEMETRY__WORKER_METRICS_PORT"] = str(worker_metrics_port(settings))
    if not settings.alerts.gateway_metrics_urls:
        # The alert watcher reads the gateway's request metrics (alert.gateway_*).
        env["TENANTFLOW_ALERTS__GATEWAY_METRICS_URLS"] = json.dumps(
            [f"{settings.gateway.base_url()}/metrics"]
        )
    env.setdefault("TENANTFLOW_LOG__FORMAT", "console")
    return env


def _wait_ready(url: str, children: list[ManagedProcess], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        for child in children:
            if not child.running():
                raise DependencyUnavailable(
                    f"the {child.name} exited during start-up", details={"log": str(child.log_path)}
                )
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.25)
    raise DependencyUnavailable(
        "the gateway did not become ready in time", details={"last_answer": last[:500]}
    )


def _watch(
    stop: threading.Event,
    temporal: TemporalDevServer,
    children: list[ManagedProcess],
    interval: float = 0.5,
) -> int:
    """Watch the running stack until ``stop`` is set (exit code 0) or a child process exits (1).

    Temporal exiting is reported once and the stack keeps serving: the gateway then reports
    itself not ready, naming Temporal."""
    temporal_down_reported = False
    while not stop.wait(interval):
        if not temporal_down_reported and not temporal.running():
            typer.secho(f"Temporal exited; see {temporal.log_path}", fg="red", err=True)
            temporal_down_reported = True
        dead = [c for c in children if not c.running()]
        if dead:
            typer.secho(f"the {dead[0].name} exited; see {dead[0].log_path}", fg="red", err=True)
            return 1
    return 0


def run_dev_stack(settings: Settings) -> int:
    """Run the stack until a stop signal; return the exit code."""
    dev = settings.dev
    data_dir = dev.data_dir.resolve()
    ensure_ports_free(
        {
            "PostgreSQL": (dev.postgres_port, "TENANTFLOW_DEV__POSTGRES_PORT"),
            "Temporal frontend": (dev.temporal_port, "TENANTFLOW_DEV__TEMPORAL_PORT"),
            "Temporal Web UI": (dev.temporal_ui_port, "TENANTFLOW_DEV__TEMPORAL_UI_PORT"),
            "dev issuer": (dev.issuer_port, "TENANTFLOW_DEV__ISSUER_PORT"),
            "gateway": (settings.gateway.port, "TENANTFLOW_GATEWAY__PORT"),
            "worker metrics": (
                worker_metrics_port(settings),
                "TENANTFLOW_TELEMETRY__WORKER_METRICS_PORT",
            ),
        }
    )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    started_at = time.monotonic()
    postgres = EmbeddedPostgres(data_dir / "postgres", dev.postgres_port)
    temporal = TemporalDevServer(
        data_dir / "temporal",
        dev.temporal_port,
        dev.temporal_ui_port,
        namespace=settings.temporal.namespace,
    )
    children: list[ManagedProcess] = []
    code = 0
    try:
        typer.echo(f"starting PostgreSQL on 127.0.0.1:{dev.postgres_port} (data in {data_dir})")
        postgres.start(dev.startup_timeout_seconds)
        typer.echo(f"starting Temporal on {temporal.address}")
        temporal.start(dev.startup_timeout_seconds)
        issuer = DevIssuer(data_dir / "issuer", dev_issuer_url(dev.issuer_port))
        env = _child_env(settings, postgres.dsn(), temporal.address, issuer)
        logs = data_dir / "logs"
        for name in ("dev-issuer", "worker", "gateway"):
            child = ManagedProcess(
                name,
                [sys.executable, "-m", "cli.main", name],
                env=env,
                log_path=logs / f"{name}.log",
            )
            child.start()
            children.append(child)
        base = settings.gateway.base_url()
        _wait_ready(f"{base}/health/ready", children, dev.startup_timeout_seconds)
        elapsed = time.monotonic() - started_at
        typer.secho(f"\ntenantflow is up in {elapsed:.1f} s", fg="green", bold=True)
        typer.echo(f"  API docs     {base}/docs")
        typer.echo(f"  API          {base}/api/v1")
        typer.echo(f"  dashboard    {base}/ui")
        typer.echo(f"  metrics      {base}/metrics (gateway)")
        worker_metrics = f"http://127.0.0.1:{worker_metrics_port(settings)}/metrics"
        typer.echo(f"  metrics      {worker_metrics} (worker)")
        typer.echo(f"  Temporal UI  {temporal.ui_url}")
        typer.echo(f"  Temporal     {temporal.address} (namespace {settings.temporal.namespace})")
        typer.echo(f"  PostgreSQL   127.0.0.1:{dev.postgres_port}, catalog database 'tenantflow'")
        typer.echo(f"  identity     {issuer.issuer_url} (dev issuer, Keycloak layout)")
        typer.echo(f"  logs         {logs}")
        typer.echo("\nadmin token (1 h; more with `tenantflow token --role infra-operator`):")
        typer.echo(issuer.mint(subject="dev-admin", roles=["infra-admin"], username="admin"))
        typer.echo("press Ctrl-C to stop; data is kept for the next start")
        code = _watch(stop, temporal, children)
    finally:
        typer.echo("stopping...")
        for child in reversed(children):
            # The worker drains running activities for up to 30 s on SIGTERM.
            child.stop(timeout=40 if child.name == "worker" else 15)
        temporal.stop()
        postgres.stop()
        typer.echo("stopped")
    return code
