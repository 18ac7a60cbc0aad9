"""The evaluation flow: score a checkpoint on the embedded world's held-out sets, log it to MLflow.

    asg evaluate --checkpoint models/checkpoints/shapes-base
"""

from __future__ import annotations

from prefect import flow

from flows.tracking import Tracker
from storage.settings import Settings
from tasks.evaluate import evaluate_checkpoint
from world.evaluation import EvalConfig


@flow(name="asg-evaluate", log_prints=True)
def evaluate_flow(checkpoint: str, tiny: bool = False, seed: int = 0) -> dict[str, float]:
    config = EvalConfig.tiny() if tiny else EvalConfig(seed=seed)
    tracker = Tracker(Settings.from_env().mlflow_uri, "asg-evaluate")
    with tracker.run("evaluate", tags={"checkpoint": checkpoint}):
        tracker.log_params({"checkpoint": checkpoint, "vqa_scenes": config.vqa_scenes,
                            "geneval_per_category": config.geneval_per_category,
                            "samples_per_prompt": config.samples_per_prompt, "seed": config.seed})
        metrics = evaluate_checkpoint(checkpoint, -1, config).metrics
        tracker.log_metrics(metrics)
    return metrics
