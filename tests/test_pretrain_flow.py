"""The pretraining flow on a tiny config: curves in MLflow, a loadable checkpoint, its card."""

import json

import mlflow
import pytest

from flows.pretrain import pretrain_flow
from models.registry import load_backbone
from storage.settings import Settings


@pytest.mark.usefixtures("prefect_server")
def test_pretrain_flow_logs_curves_and_writes_checkpoint_with_card(asg_home, tmp_path):
    out = tmp_path / "tiny-base"
    mix = {"vqa": 0.5, "caption": 0.1, "ask": 0.1, "spec": 0.1, "t2i": 0.2}
    summary = pretrain_flow(str(out), size="tiny", seed_scenes=5, steps=30, control_steps=4, eval_size="tiny",
                            mix=mix)
    backbone = load_backbone(out)
    assert backbone.config.hidden_size == 32 and not backbone.roles_attached
    card = json.loads((out / "card.json").read_text())
    assert card["command"].startswith("asg pretrain") and "--steps 30" in card["command"] and card["seed"] == 0
    assert "--mix vqa=0.5,caption=0.1,ask=0.1,spec=0.1,t2i=0.2" in card["command"] and card["mix"] == mix
    assert card["metrics"]["vqa_accuracy"] == summary["vqa_accuracy"]
    assert "control_vqa_delta" in summary

    mlflow.set_tracking_uri(Settings.from_env().mlflow_uri)
    run = mlflow.search_runs(experiment_names=["asg-pretrain"], output_format="list")[0]
    client = mlflow.MlflowClient()
    losses = client.get_metric_history(run.info.run_id, "train_loss")
    lrs = client.get_metric_history(run.info.run_id, "learning_rate")
    assert len(losses) == 30 and len(lrs) == 30
    assert lrs[-1].value < lrs[5].value  # the rate decays
    assert losses[-1].value < losses[0].value
    assert run.data.params["steps"] == "30" and run.data.params["mix"] == "vqa=0.5,caption=0.1,ask=0.1,spec=0.1,t2i=0.2"


@pytest.mark.usefixtures("prefect_server")
def test_evaluate_flow_logs_to_mlflow_and_lancedb(asg_home):
    from flows.evaluate import evaluate_flow
    from storage.tables import connect, read
    from tests.conftest import SHIPPED_BASE

    metrics = evaluate_flow(str(SHIPPED_BASE), tiny=True)
    assert set(metrics) >= {"vqa_accuracy", "geneval_overall", "caption_accuracy", "proposer_well_posed"}
    mlflow.set_tracking_uri(Settings.from_env().mlflow_uri)
    run = mlflow.search_runs(experiment_names=["asg-evaluate"], output_format="list")[0]
    assert run.data.metrics["vqa_accuracy"] == pytest.approx(metrics["vqa_accuracy"])
    rows = read(connect(Settings.from_env()), "evaluations")
    scores = {k: v for k, v in metrics.items() if k != "seconds"}  # the stage's wall time is not a score
    assert len(rows) == 1 and json.loads(rows["metrics_json"][0]) == scores and metrics["seconds"] > 0


def test_pretraining_a_relation_reading_base_adds_locate_items_and_saves_the_option(asg_home, tmp_path,
                                                                                    monkeypatch):
    import tasks.pretrain
    from models.training import TrainConfig
    from tasks.logic.held_out_evaluation import EvalConfig
    from tasks.pretrain import pretrain_base

    made, mixes = [], []
    real, real_batches = tasks.pretrain.relation_reading_examples, tasks.pretrain.mixture_batches
    monkeypatch.setattr(tasks.pretrain, "relation_reading_examples",
                        lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    monkeypatch.setattr(tasks.pretrain, "mixture_batches",
                        lambda examples, mix, *a, **k: mixes.append(mix) or real_batches(examples, mix, *a, **k))
    out = tmp_path / "reading-base"
    mix = {"vqa": 0.3, "relate": 0.3, "t2i": 0.4}
    result = pretrain_base.fn("shapes", "tiny", 4, TrainConfig(steps=6, lr=3e-3, warmup_steps=1), 16, str(out),
                              EvalConfig.tiny(), validate_every=100, relation_reading=True, mix=mix)
    assert mixes == [mix]
    backbone = load_backbone(out)
    assert backbone.config.relation_reading and backbone.network.position_channels
    assert len(result.losses) == 6 and all(loss == loss for loss in result.losses)
    assert len(made) == 1 and sum(e["prompt"].endswith(" left of") for e in made[0]) > 0  # locate items too


def test_the_demo_rebuilds_the_shipped_base_with_the_recipe_its_card_records():
    from flows.demo import SHIPPED_BASE, SHIPPED_BASE_RECIPE
    from tasks.logic.pretrain_mix import format_mix

    card = json.loads((SHIPPED_BASE / "card.json").read_text())
    recipe = SHIPPED_BASE_RECIPE
    assert card["steps"] == recipe["steps"] and card["lr"] == recipe["lr"]
    assert card["relation_reading"] == recipe["relation_reading"] and card["t2i_per_scene"] == recipe["t2i_per_scene"]
    assert card["mix"] == recipe["mix"] and f"--mix {format_mix(recipe['mix'])}" in card["command"]
