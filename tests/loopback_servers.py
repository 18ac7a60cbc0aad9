"""Real servers on 127.0.0.1 for integration tests: Prefect (with its UI), MLflow, moto's S3.

Each runs in its own process group with its own temporary home, is polled on its health URL,
and is stopped with SIGTERM to the group (SIGKILL after 15 s).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
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


def start_prefect(home: Path) -> tuple[subprocess.Popen, str]:
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # The UI asks its browser to call PREFECT_UI_API_URL (default port 4200): point it at this server.
    env = {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TMPDIR": str(home),
           "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api"}
    proc = start([str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env,
                 home / "server.log")
    wait_for(f"http://127.0.0.1:{port}/api/health", proc, home / "server.log")
    return proc, f"http://127.0.0.1:{port}"


def start_mlflow(home: Path) -> tuple[subprocess.Popen, str]:
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true", "TMPDIR": str(home)}
    proc = start([str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                  "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
                  "--artifacts-destination", str(home / "artifacts")], env, home / "server.log")
    wait_for(f"http://127.0.0.1:{port}/health", proc, home / "server.log")
    return proc, f"http://127.0.0.1:{port}"
