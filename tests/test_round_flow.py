"""A tiny round under a real Prefect test server, a temporary LanceDB and an MLflow SQLite store."""

import mlflow
import pytest

from flows.round import RoundConfig, round_flow
from storage.settings import Settings
from storage.tables import connect, read
from tests.conftest import SHIPPED_BASE

TABLES = ("images", "questions", "answers", "votes", "specs", "generations", "scores", "filter_decisions",
          "training_examples", "evaluations")


def _config() -> RoundConfig:
    return RoundConfig(source="world://unlabeled?n=12&seed=5", n_images=12, n_candidates=2, n_samples=3,
                       n_per_prompt=2, n_check_answers=2, finetune_steps={"solver": 3, "proposer": 2, "generator": 3},
                       batch_size=8, seed_scenes=20, evaluation="tiny", accept_reward=0.3)


def _snapshot(db) -> dict:
    out = {}
    for name in TABLES:
        frame = read(db, name)
        key = frame.columns[0]
        out[name] = frame.drop(columns=[c for c in ("png",) if c in frame]).sort_values(key).reset_index(drop=True)
    return out


@pytest.mark.usefixtures("prefect_server")
def test_round_writes_every_table_logs_mlflow_and_reruns_idempotently(asg_home):
    config = _config()
    result = round_flow(0, str(SHIPPED_BASE), config)
    settings = Settings.from_env()
    db = connect(settings)
    first = _snapshot(db)

    assert len(first["images"]) == 12
    assert len(first["questions"]) == 12 * 2
    selected = first["questions"][first["questions"]["selected"]]
    assert len(selected) == result["propose.selected"] > 0
    assert len(first["votes"]) == len(selected)
    assert len(first["answers"]) == len(selected) * 3
    assert set(first["answers"]["framing"]) == {"canonical", "observational", "analyst"}
    assert first["votes"]["majority_fraction"].between(1 / 3, 1).all()
    assert len(first["specs"]) == 12
    n_valid = int(first["specs"]["valid"].sum())
    assert len(first["generations"]) == 2 * n_valid == len(first["scores"])
    assert first["scores"]["reward"].between(0, 1).all()
    assert len(first["filter_decisions"]) == len(selected) + len(first["scores"])
    assert len(first["training_examples"]) == result["filter.examples"]
    assert len(first["evaluations"]) == 1
    assert (settings.home / "objects" / "checkpoints" / "round-0" / "adapter_solver.safetensors").is_file()

    mlflow.set_tracking_uri(settings.mlflow_uri)
    runs = mlflow.search_runs(experiment_names=["asg-evolution"])
    assert len(runs) == 1 and runs.loc[0, "tags.mlflow.runName"] == "round-0"
    assert runs.loc[0, "metrics.propose.candidates"] == 24
    assert runs.loc[0, "metrics.solve.answers"] == len(first["answers"])
    assert "metrics.evaluate.vqa_accuracy" in runs.columns
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(runs.loc[0, "run_id"])}
    assert {"checkpoint", "report"} <= artifacts

    round_flow(0, str(SHIPPED_BASE), config)
    second = _snapshot(db)
    for name in TABLES:
        assert len(second[name]) == len(first[name]), name
        if name != "evaluations":
            assert second[name].equals(first[name]), name
