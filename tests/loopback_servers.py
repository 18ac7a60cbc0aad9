"""Real servers on 127.0.0.1 for integration tests: Prefect (with its UI), MLflow, moto's S3, and PostgreSQL
(the production database of Prefect and MLflow, from the Debian `postgresql` package).

Each runs in its own process group with its own temporary home, is polled on its health URL,
and is stopped with SIGTERM to the group (SIGKILL after 15 s).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    handle = open(log, "ab")
    return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} server exited ({proc.returncode}); log:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout} s; log:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(15)
    except ProcessLookupError:
        pass


def wait_until_idle(proc: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until a served process (`asg serve`) has no child processes left: the flow-run subprocess it started
    can report a final state before it exits, and a runner stopped meanwhile cancels the runs it still tracks,
    turning a Completed run into Cancelled."""
    import psutil

    deadline = time.time() + timeout
    try:
        parent = psutil.Process(proc.pid)
        while time.time() < deadline and parent.children(recursive=False):
            time.sleep(0.5)
    except psutil.NoSuchProcess:
        pass


def _postgres_bin(tool: str) -> str:
    found = shutil.which(tool) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {tool} is not installed: apt-get install -y postgresql (see .ci/run)")
    return found


class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (trust auth, fsync off), one database per `database()` call.

    As root it runs as Debian's `postgres` user (initdb refuses root), in a folder that user can reach."""

    def __init__(self, root: Path):
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            root = Path(tempfile.mkdtemp(prefix="asg-postgres-", dir="/tmp"))
            shutil.chown(root, "postgres")
        self.root, self.port, self.names = root, free_port(), 0
        data, log = root / "data", root / "postgres.log"
        subprocess.run([*self.as_user, _postgres_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "asg",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
        self.proc = subprocess.Popen([*self.as_user, _postgres_bin("postgres"), "-D", str(data), "-h", "127.0.0.1",
                                      "-p", str(self.port), "-k", str(root), "-F", "-c", "max_connections=200"],
                                     stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while subprocess.run([_postgres_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                             capture_output=True).returncode != 0:
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"PostgreSQL did not start; log:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)

    def database(self, prefix: str) -> str:
        """A new empty database; its URL (postgresql://asg@127.0.0.1:PORT/NAME, no password: trust auth)."""
        self.names += 1
        name = f"{prefix}_{self.names}"
        subprocess.run([_postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "asg", name],
                       check=True, capture_output=True)
        return f"postgresql://asg@127.0.0.1:{self.port}/{name}"

    @staticmethod
    def for_mlflow(url: str) -> str:
        """`url` with psycopg2 named as the driver (SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3)."""
        return url.replace("postgresql://", "postgresql+psycopg2://", 1)

    def stop(self) -> None:
        stop(self.proc)
        if self.as_user:
            shutil.rmtree(self.root, ignore_errors=True)


def start_prefect(home: Path, database_url: str | None = None) -> tuple[subprocess.Popen, str]:
    """`database_url`: a postgresql:// database for the server (default: SQLite under `home`)."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # The UI asks its browser to call PREFECT_UI_API_URL (default port 4200): point it at this server.
    env = {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TMPDIR": str(home),
           "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api"}
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    proc = start([str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env,
                 home / "server.log")
    wait_for(f"http://127.0.0.1:{port}/api/health", proc, home / "server.log")
    return proc, f"http://127.0.0.1:{port}"


def start_mlflow(home: Path, backend_store_uri: str | None = None) -> tuple[subprocess.Popen, str]:
    """`backend_store_uri`: a postgresql:// database for runs and the registry (default: SQLite under `home`)."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true", "TMPDIR": str(home)}
    proc = start([str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                  "--backend-store-uri",
                  Postgres.for_mlflow(backend_store_uri) if backend_store_uri else f"sqlite:///{home / 'mlflow.db'}",
                  "--artifacts-destination", str(home / "artifacts")], env, home / "server.log")
    wait_for(f"http://127.0.0.1:{port}/health", proc, home / "server.log")
    return proc, f"http://127.0.0.1:{port}"
