"""Operations, end to end on real loopback servers: the nightly deployment served by `asg serve`,
a fault injected in one stage, the failed flow run retried the way the Prefect UI's Retry button
does it, and the MLflow server's registry holding the round's version once.

Asserts: stages before the fault come back `Cached` (not recomputed), the failed stage and those
after it run, the LanceDB tables equal an uninterrupted run's rows exactly, and the round's MLflow
run finishes once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.loopback_servers import VENV_BIN, start, start_mlflow, start_prefect, stop, wait_until_idle

pytestmark = pytest.mark.integration

DEPLOYMENT = "asg-nightly/nightly-cpu-tiny"
STAGES = ["plan-round", "ingest-images", "propose-questions", "solve-and-vote", "generate-images",
          "score-generations", "filter-examples", "finetune-roles", "diagnose-round"]
ROW_TABLES = {"images": "image_id", "questions": "question_id", "answers": "answer_id", "votes": "question_id",
              "specs": "spec_id", "generations": "generation_id", "scores": "generation_id",
              "filter_decisions": "item_id", "training_examples": "example_id"}
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def servers(request, tmp_path_factory):
    """The Prefect server and the MLflow tracking server, on SQLite or (slow suite) on one PostgreSQL."""
    root = tmp_path_factory.mktemp(f"operations-{request.param}")
    pg = request.getfixturevalue("postgres") if request.param == "postgresql" else None
    prefect_db, mlflow_db = (pg.database("prefect"), pg.database("mlflow")) if pg else (None, None)
    prefect_proc, prefect_url = start_prefect(root / "prefect-server", prefect_db)
    mlflow_proc, mlflow_url = start_mlflow(root / "mlflow-server", mlflow_db)
    yield {"root": root, "prefect": prefect_url, "mlflow": mlflow_url, "prefect_db": prefect_db,
           "mlflow_db": mlflow_db}
    stop(prefect_proc)
    stop(mlflow_proc)


@pytest.fixture
def api(servers, monkeypatch):
    """The test process talks to the loopback Prefect server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("PREFECT_API_URL", f"{servers['prefect']}/api")
    with temporary_settings({PREFECT_API_URL: f"{servers['prefect']}/api"}):
        yield servers


def _rows(home: Path) -> dict[str, pd.DataFrame]:
    from storage.settings import Settings
    from storage.tables import connect, read

    db = connect(Settings(home=home, lancedb_uri=str(home / "lancedb"), objects_uri=str(home / "objects"),
                          mlflow_uri=""))
    out = {}
    for table, key in ROW_TABLES.items():
        frame = read(db, table)
        out[table] = frame.sort_values(list(dict.fromkeys([key, "round_idx"] if "round_idx" in frame else [key]))) \
            .reset_index(drop=True)
    return out


@pytest.fixture(scope="module")
def reference_rows(servers, tmp_path_factory):
    """An uninterrupted nightly round with the same parameters, in its own home (run by the same CLI)."""
    import subprocess

    home = tmp_path_factory.mktemp("reference")
    env = {**os.environ, "ASG_HOME": str(home), "PREFECT_HOME": str(home / "prefect"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}", "PREFECT_API_URL": ""}
    env.pop("PREFECT_API_URL")
    done = subprocess.run([str(VENV_BIN / "asg"), "nightly", "--preset", "cpu-tiny"], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return _rows(home)


def _serve(servers, home: Path):
    env = {"ASG_HOME": str(home), "PREFECT_API_URL": f"{servers['prefect']}/api", "PREFECT_HOME": str(home / "prefect"),
           "PREFECT_RUNNER_POLL_FREQUENCY": "1", "MLFLOW_TRACKING_URI": servers["mlflow"], "TMPDIR": str(home),
           "PREFECT_TASKS_REFRESH_CACHE": "false"}  # the retried run must find its finished stages
    home.mkdir(parents=True, exist_ok=True)
    proc = start([str(VENV_BIN / "asg"), "serve", "--preset", "cpu-tiny"], env, home / "serve.log")
    from prefect.client.orchestration import get_client

    deadline = time.time() + 180
    while time.time() < deadline:
        log = (home / "serve.log").read_text(errors="replace")
        assert proc.poll() is None, log[-3000:]
        if "being served" in log:
            with get_client(sync_client=True) as client:
                return proc, client.read_deployment_by_name(DEPLOYMENT)
        time.sleep(1)
    raise TimeoutError((home / "serve.log").read_text()[-3000:])


def wait_final(client, flow_run_id, run_count: int, timeout: float = 600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = client.read_flow_run(flow_run_id)
        if run.state and run.state.type.value in FINAL and run.run_count >= run_count:
            return run
        time.sleep(1)
    raise TimeoutError(f"flow run {flow_run_id} not final: {run.state}")


def stage_states(client, flow_run_id, settle_on: str = "diagnose-round") -> dict[str, list[str]]:
    """Task-run state names per stage, in creation order (eventually consistent: poll until settled)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.time() + 60
    while True:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        runs = sorted(runs, key=lambda t: t.created)
        states: dict[str, list[str]] = {}
        for t in runs:
            states.setdefault(t.name.rsplit("-", 1)[0], []).append(t.state.name if t.state else "None")
        pending = any(s not in ("Completed", "Cached", "Failed") for v in states.values() for s in v)
        if (not pending and settle_on in states) or time.time() > deadline:
            return states
        time.sleep(0.5)


def _mlflow_runs(servers, experiment: str, key: str):
    import mlflow

    client = mlflow.tracking.MlflowClient(servers["mlflow"])
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`asg.resume_key` = '{key}'"), client


def _api_retry(client, flow_run_id, ui_url, shots: Path) -> None:
    """What the UI's Retry button sends: the same flow run goes back to Scheduled/AwaitingRetry."""
    from prefect.states import AwaitingRetry

    client.set_flow_run_state(flow_run_id, AwaitingRetry(message="Retry from the UI"), force=False)


def _browser_retry(client, flow_run_id, ui_url, shots: Path) -> None:
    """A person's click: headless Debian Chromium opens the failed run's page and presses Retry."""
    from playwright.sync_api import sync_playwright

    chromium = Path("/usr/bin/chromium")
    assert chromium.exists(), "browser tests need Debian's chromium: apt-get install -y chromium (see .ci/run)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{ui_url}/runs/flow-run/{flow_run_id}")
        page.get_by_role("button", name="Retry").first.click(timeout=60_000)
        dialog = page.get_by_role("dialog")
        assert "Any task runs without a persisted result" in dialog.inner_text()
        page.screenshot(path=str(shots / "prefect-ui-retry-dialog.png"))
        dialog.get_by_role("button", name="Retry").click()
        page.wait_for_timeout(1000)
        page.screenshot(path=str(shots / "prefect-ui-after-retry.png"))
        browser.close()


# The propose fault runs in CI's slow step: the API retry is covered in the default suite by the fine-tune fault,
# the UI's by the generate fault (each ~50 s; the three kept the default suite above 15 minutes).
@pytest.mark.parametrize("fault_stage,retry", [pytest.param("propose", _api_retry, marks=pytest.mark.slow),
                                               ("finetune", _api_retry), ("generate", _browser_retry)],
                         ids=["propose-api", "finetune-api", "generate-browser"])
def test_retry_of_a_failed_nightly_run_resumes_at_the_failed_stage(api, reference_rows, tmp_path, fault_stage,
                                                                   retry):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    home = tmp_path / "served"
    proc, _ = _serve(api, home)
    marker = tmp_path / "fault-marker"
    marker.write_text("fail while I exist")
    model, experiment = f"ops-{fault_stage}", f"ops-{fault_stage}"
    try:
        run = run_deployment(DEPLOYMENT, timeout=0, parameters={
            "registered_model": model, "experiment": experiment,
            "inject_fault": {"stage": fault_stage, "while_exists": str(marker)}})
        with get_client(sync_client=True) as client:
            first = wait_final(client, run.id, 1)
            assert first.state.type.value == "FAILED", first.state
            assert "injected fault" in (home / "serve.log").read_text()
            marker.unlink()
            retry(client, run.id, api["prefect"], tmp_path)
            second = wait_final(client, run.id, 2)
            assert second.state.type.value == "COMPLETED", second.state
            assert second.run_count == 2
            states = stage_states(client, run.id)
            wait_until_idle(proc)  # stopping the runner while the run's process still exits would cancel it
    finally:
        stop(proc)

    fault_task = {"propose": "propose-questions", "generate": "generate-images", "finetune": "finetune-roles"}[
        fault_stage]
    cut = STAGES.index(fault_task)
    for stage in STAGES[:cut]:
        assert states[stage] == ["Completed", "Cached"], (stage, states)
    assert states[fault_task] == ["Failed", "Completed"], states
    for stage in STAGES[cut + 1:]:
        assert states[stage] == ["Completed"], (stage, states)

    rows = _rows(home)
    for table, frame in reference_rows.items():
        assert len(frame) > 0, table
        pd.testing.assert_frame_equal(rows[table], frame, check_exact=True, obj=table)

    runs, client = _mlflow_runs(api, experiment, str(run.id))
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["asg.resumed"] == "true"
    versions = client.search_model_versions(f"name = '{model}'")
    assert sorted(int(v.version) for v in versions) == [1, 2]  # the base, then this round, once each
    if api["prefect_db"]:  # the run and its MLflow records really live in PostgreSQL
        import psycopg2

        with psycopg2.connect(api["prefect_db"]) as conn, conn.cursor() as cur:
            cur.execute("SELECT run_count, state_type FROM flow_run WHERE id = %s", (str(run.id),))
            assert cur.fetchall() == [(2, "COMPLETED")]
        with psycopg2.connect(api["mlflow_db"]) as conn, conn.cursor() as cur:
            cur.execute("SELECT status FROM runs WHERE run_uuid = %s", (runs[0].info.run_id,))
            assert cur.fetchall() == [("FINISHED",)]


def test_prefect_yaml_deploys_to_a_process_pool_with_the_presets(api, tmp_path):
    """infra/prefect.yaml deploys against the server; its nightly parameters are the code's presets."""
    import subprocess

    import yaml
    from prefect.client.orchestration import get_client

    from flows.nightly import NIGHTLY_PRESETS, nightly_flow
    from flows.round import RoundConfig

    repo = Path(__file__).resolve().parent.parent
    spec = yaml.safe_load((repo / "infra" / "prefect.yaml").read_text())
    nightly = {d["name"]: d for d in spec["deployments"] if d["name"].startswith("nightly-")}
    assert set(nightly) == {f"nightly-{p}" for p in NIGHTLY_PRESETS}
    for name, deployment in nightly.items():
        preset = name.removeprefix("nightly-")
        assert RoundConfig(**deployment["parameters"]["config"]) == RoundConfig(**NIGHTLY_PRESETS[preset])
        assert set(deployment["parameters"]) <= set(nightly_flow.parameters.properties)

    env = {**os.environ, "ASG_REPO": str(repo), "PREFECT_HOME": str(tmp_path / "prefect"), "TMPDIR": str(tmp_path)}
    for cmd in (["work-pool", "create", "asg-process", "--type", "process", "--overwrite"],
                ["--no-prompt", "deploy", "--all", "--prefect-file", "infra/prefect.yaml"]):
        done = subprocess.run([str(VENV_BIN / "prefect"), *cmd], cwd=repo, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    with get_client(sync_client=True) as client:
        tiny = client.read_deployment_by_name("asg-nightly/nightly-cpu-tiny")
        assert tiny.work_pool_name == "asg-process"
        assert tiny.parameters["config"]["n_images"] == 48 and tiny.parameters["config"]["solve"] == {"n_samples": 3}
        (schedule,) = tiny.schedules
        assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == ("0 2 * * *", "UTC", True)
        assert client.read_deployment_by_name("asg-evaluate/evaluate").entrypoint == "flows/evaluate.py:evaluate_flow"
        assert client.read_deployment_by_name("asg-pretrain/pretrain").work_pool_name == "asg-process"
