"""The production compose file (infra/production/compose.yaml), checked without a Docker engine.

Its structure (services, health checks, volumes, loopback-only ports, PostgreSQL and S3 backends, one-shot jobs
that the long-running services wait for) and its environment: every variable it gives an asg container is one
the code or a library it uses reads, and every `${VAR}` it interpolates is in the example env file or has a
default."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = ROOT / "infra" / "production"
COMPOSE = yaml.safe_load((PRODUCTION / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
ASG_IMAGE = "asg:latest"


def _code_env_reads() -> set[str]:
    pattern = re.compile(r"""(?:environ(?:\.get)?[(\[]|getenv\()\s*["']([A-Z0-9_]+)["']""")
    names: set[str] = set()
    for package in ("flows", "tasks", "models", "storage", "dashboards", "world", "text"):
        for path in (ROOT / package).rglob("*.py"):
            names |= set(pattern.findall(path.read_text()))
    return names


def _library_env_reads() -> dict[str, bool]:
    """Variables the code hands to a library rather than reading itself, each checked against that library."""
    import mlflow.environment_variables as mlflow_env
    from prefect.settings import Settings as PrefectSettings

    prefect_names = {f"PREFECT_{name.upper()}" for name in PrefectSettings.model_fields}
    worker = PrefectSettings().worker
    prefect_names |= {f"PREFECT_WORKER_{name.upper()}" for name in type(worker).model_fields}
    prefect_names |= {f"PREFECT_WORKER_WEBSERVER_{name.upper()}" for name in type(worker.webserver).model_fields}
    return {
        "PREFECT_WORKER_WEBSERVER_HOST": "PREFECT_WORKER_WEBSERVER_HOST" in prefect_names,
        "PREFECT_WORKER_WEBSERVER_PORT": "PREFECT_WORKER_WEBSERVER_PORT" in prefect_names,
        "MLFLOW_S3_ENDPOINT_URL": mlflow_env.MLFLOW_S3_ENDPOINT_URL.name == "MLFLOW_S3_ENDPOINT_URL",
        # infra/prefect.yaml's pull step: set_working_directory "{{ $ASG_REPO }}"
        "ASG_REPO": "$ASG_REPO" in (ROOT / "infra" / "prefect.yaml").read_text(),
    }


def test_every_service_the_issue_names_is_there_with_a_health_check_and_its_data_on_a_volume():
    assert {"postgres", "prefect-server", "worker", "mlflow", "minio"} <= set(SERVICES)
    for name, service in SERVICES.items():
        one_shot = service.get("restart") == "no"
        assert one_shot or service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in SERVICES, f"{name} waits for unknown service {dependency}"
            wanted = "service_completed_successfully" if SERVICES[dependency].get("restart") == "no" \
                else "service_healthy"
            assert condition == {"condition": wanted}, f"{name} -> {dependency}: {condition}"
    named_volumes = set(COMPOSE["volumes"])
    for name in ("postgres", "minio", "prefect-server", "worker"):
        mounts = {m.split(":")[0] for m in SERVICES[name]["volumes"]}
        assert mounts & named_volumes, f"{name} keeps its data on no named volume"


def test_published_ports_bind_loopback_only():
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond 127.0.0.1"


def test_prefect_and_mlflow_run_on_postgresql_with_artifacts_in_the_object_store():
    prefect_db = SERVICES["prefect-server"]["environment"]["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    assert prefect_db.startswith("postgresql+asyncpg://") and prefect_db.endswith("@postgres:5432/prefect")
    mlflow_args = SERVICES["mlflow"]["command"]
    backend = next(a for a in mlflow_args if a.startswith("--backend-store-uri="))
    assert backend.split("=", 1)[1].startswith("postgresql://") and backend.endswith("@postgres:5432/mlflow")
    assert "--artifacts-destination=s3://mlflow" in mlflow_args
    assert "CREATE DATABASE mlflow" in (PRODUCTION / "postgres-init.sql").read_text()
    worker = SERVICES["worker"]
    assert worker["image"] == ASG_IMAGE and "--with-healthcheck" in worker["command"]
    env = worker["environment"]
    assert env["ASG_LANCEDB_URI"].startswith("s3://") and env["ASG_OBJECTS_URI"].startswith("s3://")
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"


def test_every_variable_given_to_an_asg_container_is_read_by_the_code_or_its_libraries():
    code = _code_env_reads()
    libraries = _library_env_reads()
    assert all(libraries.values()), {k: v for k, v in libraries.items() if not v}
    for name, service in SERVICES.items():
        if service.get("image") != ASG_IMAGE:
            continue
        for variable in service.get("environment", {}):
            assert variable in code or variable in libraries, f"{name} sets {variable}, which nothing reads"


def test_every_interpolated_variable_has_a_default_or_an_example_value():
    text = (PRODUCTION / "compose.yaml").read_text()
    example = {line.split("=", 1)[0] for line in (PRODUCTION / "example.env").read_text().splitlines()
               if line and not line.startswith("#")}
    for match in re.finditer(r"(?<!\$)\$\{([A-Z0-9_]+)(:?[-?][^}]*)?\}", text):
        variable, modifier = match.group(1), match.group(2) or ""
        assert modifier.startswith(":-") or variable in example, f"${{{variable}}} has no default or example"
    assert "change-me" in (PRODUCTION / "example.env").read_text()  # no real secret is committed
