"""The nightly self-evolution flow: one round from the current champion, then the promotion gate.

Each night: plan the round index, start from the MLflow registry's `champion` (the configured
base checkpoint on the first night, registered as version 1), run the round's stages as persisted
tasks, evaluate the new checkpoint on the *validation* split, register it as a new model version
and move the `champion` alias to it only when it beats the champion by `promotion_margin`.
A retried flow run (the Prefect UI's Retry) skips finished stages and reopens its MLflow run.

    asg serve                                    # serve the nightly, evaluate and pretrain deployments
    asg nightly --preset cpu-tiny                # one nightly round now, without a server
"""

from __future__ import annotations

import dataclasses
from typing import Any

from prefect import flow
from prefect.runtime import flow_run as prefect_flow_run

from flows.demo import SHIPPED_BASE
from flows.round import RoundConfig, execute_round
from flows.task_runners import task_runner
from flows.tracking import Tracker
from storage.checkpoints import local_checkpoint
from storage.leases import round_lease
from storage.settings import Settings
from tasks.evaluate import evaluate_checkpoint
from tasks.logic.promotion import promotion_decision
from tasks.round_plan import next_round_idx

SHIPPED_BASE_URI = str(SHIPPED_BASE)

# Parameter presets of the nightly deployment (see infra/prefect.yaml).
NIGHTLY_PRESETS: dict[str, dict[str, Any]] = {
    # a smoke-sized night on a CPU: minutes, tiny evaluation
    "cpu-tiny": {"source": "world://unlabeled?n=500&seed=7", "n_images": 48, "preset": "compose",
                 "solve": {"n_samples": 3}, "generate": {"n_per_prompt": 2}, "score": {"n_answers": 2},
                 "finetune": {"batch_size": 8, "steps": {"solver": 6, "proposer": 3, "generator": 6}},
                 "evaluate": {"kind": "tiny"}},
    # the default sizes (1,000 images, compose at 480/240/480 steps, full evaluation): about 9 minutes on 2 CPU cores
    "single-gpu": {"source": "world://unlabeled?n=100000&seed=7", "n_images": 1000, "preset": "compose"},
}


def preset_config(name: str, **overrides: Any) -> RoundConfig:
    if name not in NIGHTLY_PRESETS:
        raise ValueError(f"unknown nightly preset {name!r}; presets are {', '.join(NIGHTLY_PRESETS)}")
    return RoundConfig(**NIGHTLY_PRESETS[name]).updated(**overrides)


@flow(name="asg-nightly", log_prints=True, task_runner=task_runner())
def nightly_flow(config: RoundConfig = RoundConfig(), base_checkpoint: str = SHIPPED_BASE_URI,
                 registered_model: str = "asg-shapes", promotion_margin: float = 0.005,
                 experiment: str = "asg-nightly", inject_fault: dict[str, str] | None = None) -> dict:
    """One nightly round. `inject_fault` is for tests only ({"stage": ..., "while_exists": path})."""
    settings = Settings.from_env()
    tracker = Tracker(settings.mlflow_uri, experiment)
    validation = dataclasses.replace(config.eval_config(), split="validation")
    champion = tracker.champion(registered_model)
    if champion is None:
        champion = _register_base(tracker, registered_model, base_checkpoint, validation)
    round_idx = next_round_idx()
    with round_lease(settings, f"round-{round_idx}", settings.lease_ttl_s), \
            tracker.run(f"round-{round_idx}", tags={"round_idx": str(round_idx)}, resume_key=prefect_flow_run.id):
        result = execute_round(round_idx, champion["checkpoint_uri"], config, tracker)
        candidate = evaluate_checkpoint(result["checkpoint"], round_idx, validation).metrics
        incumbent = evaluate_checkpoint(champion["checkpoint_uri"], -1, validation).metrics
        decision = promotion_decision(candidate, incumbent, promotion_margin)
        version = tracker.register_checkpoint(registered_model, result["checkpoint"],
                                              {"round_idx": str(round_idx), "promoted": str(decision.promote)})
        if decision.promote:
            tracker.set_champion(registered_model, version)
        tracker.log_metrics({"candidate_score": decision.candidate_score,
                             "champion_score": decision.champion_score, "promoted": float(decision.promote)},
                            step=round_idx, prefix="promotion.")
        tracker.log_metrics(candidate, step=round_idx, prefix="validation.")
        tracker.set_tags({"promotion.decision": "promoted" if decision.promote else "kept-champion",
                          "promotion.reason": decision.reason, "promotion.version": version,
                          "promotion.champion_before": champion["version"]})
    print(f"round {round_idx}: validation score {decision.candidate_score:.4f} vs champion "
          f"v{champion['version']} {decision.champion_score:.4f} -> "
          f"{'promoted to champion' if decision.promote else 'kept the champion'} ({decision.reason})")
    return {**result, "round_idx": round_idx, "version": version, "promoted": decision.promote,
            "champion_before": champion["version"], "candidate_score": decision.candidate_score,
            "champion_score": decision.champion_score}


def _register_base(tracker: Tracker, model: str, base_checkpoint: str, validation) -> dict:
    """First night: the base checkpoint becomes version 1 and champion, with its validation scores."""
    settings = Settings.from_env()
    metrics = evaluate_checkpoint(base_checkpoint, -1, validation).metrics
    with tracker.run("base", tags={"round_idx": "-1"}, resume_key=f"{prefect_flow_run.id}:base"):
        tracker.log_params({"checkpoint": base_checkpoint})
        tracker.log_metrics(metrics, prefix="validation.")
        tracker.log_artifacts(str(local_checkpoint(base_checkpoint, settings)), "checkpoint")
        version = tracker.register_checkpoint(model, base_checkpoint, {"round_idx": "-1", "promoted": "True"})
        tracker.set_champion(model, version)
    return {"version": version, "checkpoint_uri": base_checkpoint, "run_id": ""}
