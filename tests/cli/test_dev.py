"""End to end: ``tenantflow dev`` as a user runs it, driven over HTTP, then stopped with Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from temporalio.client import Client

from cli.stack import free_port, port_is_free

pytestmark = pytest.mark.e2e

STARTUP_BUDGET_SECONDS = 90  # the product promise is 60 s on 2 cores; leave CI some slack


class DevStack:
    """A ``tenantflow dev`` child process with its own ports and data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.ports = {
            "TENANTFLOW_DEV__POSTGRES_PORT": free_port(),
            "TENANTFLOW_DEV__TEMPORAL_PORT": free_port(),
            "TENANTFLOW_DEV__TEMPORAL_UI_PORT": free_port(),
            "TENANTFLOW_DEV__ISSUER_PORT": free_port(),
            "TENANTFLOW_GATEWAY__PORT": free_port(),
            "TENANTFLOW_TELEMETRY__WORKER_METRICS_PORT": free_port(),
        }
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.ports['TENANTFLOW_GATEWAY__PORT']}"

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.ports['TENANTFLOW_DEV__TEMPORAL_PORT']}"

    def start(self) -> float:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTFLOW_")}
        env.update({k: str(v) for k, v in self.ports.items()})
        env["TENANTFLOW_DEV__DATA_DIR"] = str(self.data_dir)
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "dev"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if line.startswith("press Ctrl-C"):
                return time.monotonic() - started
            if time.monotonic() - started > STARTUP_BUDGET_SECONDS:
                break
        self.stop()
        pytest.fail("tenantflow dev did not come up:\n" + "".join(self.output))

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        out, _ = self.process.communicate(timeout=60)
        self.output.append(out)
        return self.process.returncode


def _processes_using(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            environ = proc.info["environ"] or {}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if str(data_dir) in cmdline or environ.get("TENANTFLOW_DEV__DATA_DIR") == str(data_dir):
            found.append(proc)
    return found


def _wait_gone(proc: psutil.Process, timeout: float = 15) -> None:
    # Not our child: it lingers as a zombie until `tenantflow dev` reaps it.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.1)
    pytest.fail(f"process {proc.pid} did not exit")


async def _workflow_exists(address: str, workflow_id: str) -> bool:
    client = await Client.connect(address)
    description = await client.get_workflow_handle(workflow_id).describe()
    return description.id == workflow_id


def test_dev_stack_serves_stops_cleanly_and_reuses_its_data(service_dir: Path) -> None:
    tmp_path = service_dir
    stack = DevStack(tmp_path / "data")
    elapsed = stack.start()
    output = "".join(stack.output)
    try:
        assert elapsed < STARTUP_BUDGET_SECONDS
        assert f"{stack.base}/docs" in output
        ui_port = stack.ports["TENANTFLOW_DEV__TEMPORAL_UI_PORT"]
        assert f"http://127.0.0.1:{ui_port}" in output
        # Observability: the dashboard, and both Prometheus endpoints, which answer.
        worker_metrics = (
            f"http://127.0.0.1:{stack.ports['TENANTFLOW_TELEMETRY__WORKER_METRICS_PORT']}/metrics"
        )
        assert f"dashboard    {stack.base}/ui" in output
        assert f"metrics      {stack.base}/metrics (gateway)" in output
        assert f"metrics      {worker_metrics} (worker)" in output
        assert httpx.get(f"{stack.base}/metrics").status_code == 200
        assert httpx.get(worker_metrics, timeout=10).status_code == 200

        assert httpx.get(f"{stack.base}/health").status_code == 200
        assert httpx.get(f"{stack.base}/health/ready").status_code == 200
        assert httpx.get(f"{stack.base}/docs").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{ui_port}/", timeout=10).status_code == 200
        # The dev stack prints an admin token right after the URLs.
        token_line = stack.output[
            stack.output.index(
                next(line for line in stack.output if line.startswith("admin token"))
            )
            + 1
        ].strip()
        anonymous = httpx.post(f"{stack.base}/api/v1/system/check", timeout=30)
        assert anonymous.status_code == 401
        check = httpx.post(
            f"{stack.base}/api/v1/system/check",
            headers={"Authorization": f"Bearer {token_line}"},
            timeout=30,
        )
        assert check.status_code == 200, check.text
        workflow_id = check.json()["workflow_id"]
        password = (tmp_path / "data" / "postgres" / "password").read_text().strip()
        secrets_file = tmp_path / "data" / "issuer" / "secrets.json"
        issuer_secrets = json.loads(secrets_file.read_text())
        assert secrets_file.stat().st_mode & 0o077 == 0
    finally:
        code = stack.stop()
    assert code == 0, "".join(stack.output)
    assert _processes_using(tmp_path / "data") == []
    for port in stack.ports.values():
        assert port_is_free(port)
    logs = "".join(p.read_text() for p in (tmp_path / "data" / "logs").glob("*.log"))
    assert password not in logs + "".join(stack.output)
    for secret in [*issuer_secrets["clients"].values(), *issuer_secrets["users"].values()]:
        assert secret not in logs + "".join(stack.output)

    # A second start reuses the data: same PostgreSQL password, Temporal remembers the workflow.
    again = DevStack(tmp_path / "data")
    again.start()
    try:
        assert (tmp_path / "data" / "postgres" / "password").read_text().strip() == password
        assert asyncio.run(_workflow_exists(again.temporal_address, workflow_id))

        # Stopping Temporal makes the gateway not ready, naming Temporal.
        temporal = [
            p for p in _processes_using(tmp_path / "data") if "start-dev" in " ".join(p.cmdline())
        ]
        assert len(temporal) == 1
        temporal[0].terminate()
        _wait_gone(temporal[0])
        ready = httpx.get(f"{again.base}/health/ready", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["dependencies"]["temporal"]["status"] == "down"
        assert ready.json()["dependencies"]["catalog"]["status"] == "up"
    finally:
        again.stop()
    assert _processes_using(tmp_path / "data") == []
    assert re.search(r"tenantflow is up in [\d.]+ s", "".join(again.output))
