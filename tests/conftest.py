"""Shared fixtures: an isolated ASG_HOME per test, one Prefect test server per session, and `database`: the same
test on SQLite (the local default) and, in the slow suite, on PostgreSQL (production's database)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="asg-tests-"))
os.environ.update({
    "PREFECT_HOME": str(_SESSION_HOME / "prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_TO_API_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "TMPDIR": str(_SESSION_HOME / "tmp"),
    # Every test's rounds really compute (a re-run checks idempotent writes, not the stage cache); the tests of
    # resuming turn the cache back on (tests/test_resume.py, the UI-retry test).
    "PREFECT_TASKS_REFRESH_CACHE": "true",
})
(_SESSION_HOME / "tmp").mkdir(exist_ok=True)
tempfile.tempdir = None  # re-read TMPDIR

SHIPPED_BASE = Path(__file__).resolve().parent.parent / "models" / "checkpoints" / "shapes-base"


@pytest.fixture
def asg_home(tmp_path, monkeypatch) -> Path:
    """A fresh ASG_HOME: its own LanceDB, object store and MLflow SQLite store."""
    home = tmp_path / "asg_home"
    monkeypatch.setenv("ASG_HOME", str(home))
    for key in ("ASG_LANCEDB_URI", "ASG_OBJECTS_URI", "MLFLOW_TRACKING_URI", "ASG_S3_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    return home


@pytest.fixture(scope="session")
def prefect_server():
    """A real Prefect server (temporary SQLite) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL cluster on 127.0.0.1 for the session (tests/loopback_servers.py), started on first use."""
    from tests.loopback_servers import Postgres

    server = Postgres(_SESSION_HOME / "postgres")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def prefect_on_postgres(postgres):
    """A real Prefect server (with its UI) whose database is PostgreSQL; its URL."""
    from tests.loopback_servers import start_prefect, stop

    proc, url = start_prefect(_SESSION_HOME / "prefect-postgres", postgres.database("prefect"))
    yield url
    stop(proc)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database(request, asg_home, monkeypatch):
    """Prefect and MLflow on SQLite (the Prefect test server, MLflow's file under ASG_HOME), or both on PostgreSQL:
    the Prefect server above and a fresh MLflow database for this test. Its name."""
    if request.param == "sqlite":
        request.getfixturevalue("prefect_server")
        yield "sqlite"
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api = f"{request.getfixturevalue('prefect_on_postgres')}/api"
    monkeypatch.setenv("PREFECT_API_URL", api)
    pg = request.getfixturevalue("postgres")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", pg.for_mlflow(pg.database("mlflow")))
    with temporary_settings({PREFECT_API_URL: api}):
        yield "postgresql"


MOTO_SECRET = "s3cr3t-never-logged"


@pytest.fixture
def moto_s3(monkeypatch):
    """moto's S3 server on 127.0.0.1 with an `asg` bucket and credentials in the environment; its endpoint URL."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "asg-test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", MOTO_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="asg")
    yield endpoint
    server.stop()
