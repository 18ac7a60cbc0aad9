"""The nightly flow's promotion gate against MLflow's model registry, on SQLite (a real Prefect test server, MLflow's
file store) and, in the slow suite, on PostgreSQL (a Prefect server and MLflow both on it)."""

from __future__ import annotations

import mlflow
import pytest

from flows.nightly import nightly_flow, preset_config
from tasks.logic.promotion import promotion_decision
from tests.conftest import SHIPPED_BASE
from storage.settings import Settings


def test_promotion_decision_by_hand():
    base = {"vqa_accuracy": 0.70, "geneval_overall": 0.80}
    assert promotion_decision({"vqa_accuracy": 0.72, "geneval_overall": 0.79}, base, 0.005).promote  # mean +0.005
    kept = promotion_decision({"vqa_accuracy": 0.71, "geneval_overall": 0.795}, base, 0.005)
    assert not kept.promote and kept.reason == "gain 0.0025 < margin 0.0050"
    assert (kept.candidate_score, kept.champion_score) == (0.7525, 0.75)
    with pytest.raises(ValueError, match="needs validation metrics geneval_overall"):
        promotion_decision({"vqa_accuracy": 0.9}, base, 0.0)
    with pytest.raises(ValueError, match="margin must be >= 0"):
        promotion_decision(base, base, -0.1)


def test_nightly_rounds_register_versions_and_the_gate_moves_the_champion_alias(asg_home, database):
    client = mlflow.tracking.MlflowClient(Settings.from_env().mlflow_uri)
    assert client.tracking_uri.startswith(database)
    config = preset_config("cpu-tiny", source="world://unlabeled?n=60&seed=3", n_images=12)
    first = nightly_flow(config, base_checkpoint=str(SHIPPED_BASE), registered_model="m", promotion_margin=0.0)
    assert first["round_idx"] == 0 and first["champion_before"] == "1" and first["version"] == "2"
    champion = client.get_model_version_by_alias("m", "champion")
    assert str(champion.version) == ("2" if first["promoted"] else "1")
    assert (first["candidate_score"] >= first["champion_score"]) == first["promoted"]
    run = client.get_run(client.get_model_version("m", "2").run_id)
    assert run.data.tags["promotion.decision"] == ("promoted" if first["promoted"] else "kept-champion")
    assert run.data.metrics["promotion.candidate_score"] == pytest.approx(first["candidate_score"])

    # An impossible margin: the round is registered but the champion stays, and is the next night's input.
    expected_input = champion.tags["asg.checkpoint_uri"]
    second = nightly_flow(config, base_checkpoint=str(SHIPPED_BASE), registered_model="m", promotion_margin=1.0)
    assert second["round_idx"] == 1 and second["version"] == "3" and not second["promoted"]
    assert str(client.get_model_version_by_alias("m", "champion").version) == str(champion.version)
    run = client.get_run(client.get_model_version("m", "3").run_id)
    assert run.data.params["input_checkpoint"] == expected_input
    assert run.data.tags["promotion.reason"].endswith("< margin 1.0000")
    assert sorted(int(v.version) for v in client.search_model_versions("name = 'm'")) == [1, 2, 3]
