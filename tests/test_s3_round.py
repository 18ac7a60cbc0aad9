"""A round whose LanceDB tables, checkpoints and Prefect stage results live on S3 (moto's server on
127.0.0.1) writes the same rows as the same round on local disk, and never logs the credentials."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest

from flows.round import round_flow
from storage.settings import Settings
from storage.tables import connect, read
from tests.conftest import MOTO_SECRET as SECRET
from tests.conftest import SHIPPED_BASE
from tests.test_round_flow import _config

pytestmark = pytest.mark.integration

ROLLOUT_TABLES = {"images": "image_id", "questions": "question_id", "answers": "answer_id", "votes": "question_id",
                  "specs": "spec_id", "generations": "generation_id", "scores": "generation_id",
                  "filter_decisions": "item_id", "training_examples": "example_id"}


def _rows() -> dict[str, pd.DataFrame]:
    db = connect(Settings.from_env())
    return {t: read(db, t).sort_values(k).reset_index(drop=True) for t, k in ROLLOUT_TABLES.items()}


@pytest.mark.usefixtures("prefect_server")
def test_a_round_on_s3_writes_the_same_rows_as_on_local_disk(asg_home, moto_s3, monkeypatch, capfd):
    import s3fs
    from prefect.settings import PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK, temporary_settings

    from flows.result_storage import save_result_storage

    round_flow(0, str(SHIPPED_BASE), _config())
    local = _rows()

    monkeypatch.setenv("ASG_LANCEDB_URI", "s3://asg/lancedb")
    monkeypatch.setenv("ASG_OBJECTS_URI", "s3://asg/objects")
    monkeypatch.setenv("ASG_S3_ENDPOINT_URL", moto_s3)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{asg_home / 's3-arm-mlflow.db'}")
    slug = save_result_storage("s3://asg/prefect-results", Settings.from_env())
    with temporary_settings({PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK: slug}):
        result = round_flow(0, str(SHIPPED_BASE), _config())
    remote = _rows()

    for table, frame in local.items():
        assert len(frame) > 0, table
        pd.testing.assert_frame_equal(remote[table], frame, check_exact=True, obj=table)
    fs = s3fs.S3FileSystem(key="asg-test-key", secret=SECRET, endpoint_url=moto_s3)
    assert result["checkpoint"] == "s3://asg/objects/checkpoints/round-0"
    latest = fs.cat_file("asg/objects/checkpoints/round-0/LATEST").decode()
    assert fs.exists(f"asg/objects/checkpoints/round-0/{latest}/config.json")
    assert sorted(fs.ls("asg/objects/checkpoints/round-0", detail=False)) == [
        "asg/objects/checkpoints/round-0/LATEST", f"asg/objects/checkpoints/round-0/{latest}"]
    assert len(fs.ls("asg/prefect-results")) >= 9  # one persisted result per stage at least
    assert {p.rsplit("/", 1)[-1] for p in fs.ls("asg/lancedb")} >= {f"{t}.lance" for t in ROLLOUT_TABLES}

    # The dashboard reads the same tables straight from the bucket.
    from dashboards.question_filters import QuestionFilter
    from dashboards.store import DashboardStore

    store = DashboardStore(Settings.from_env())
    assert store.rounds() == [0]
    assert store.count_questions(QuestionFilter(round_idx=0)) == len(read(connect(Settings.from_env()), "qa_items")) > 0
    assert store.generation_page(0, (0.0, 1.0), None, 0)[0] == len(local["scores"])

    run = mlflow.search_runs(experiment_names=["asg-evolution"], output_format="list")[0]
    logged = " ".join([*map(str, run.data.params.values()), *map(str, run.data.tags.values())])
    assert SECRET not in logged and "asg-test-key" not in logged
    # Nor in any Prefect flow run's parameters, nor in a line the round printed or logged.
    from prefect.client.orchestration import get_client

    client = get_client(sync_client=True)
    parameters = json.dumps([r.parameters for r in client.read_flow_runs()], default=str)
    assert "world://unlabeled" in parameters and SECRET not in parameters
    out, err = capfd.readouterr()
    assert "mlflow" in out + err and SECRET not in out + err
