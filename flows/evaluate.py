"""The evaluation flow: score a checkpoint on the embedded world's held-out sets, log it to MLflow.

    asg evaluate --checkpoint models/checkpoints/shapes-base
    asg evaluate --split validation     # the split for choices; `eval` (default) is for reporting
    asg evaluate --vqa-file vqa.jsonl   # also prints and logs the share of its words the backbone cannot read
"""

from __future__ import annotations

import dataclasses

from prefect import flow

from flows.tracking import Tracker
from storage.settings import Settings
from tasks.evaluate import evaluate_checkpoint, evaluate_vqa_file, generate_geneval_samples, measure_vocabulary_coverage
from tasks.logic.vocabulary_coverage import coverage_lines, coverage_metrics
from tasks.logic.held_out_evaluation import EvalConfig


@flow(name="asg-evaluate", log_prints=True)
def evaluate_flow(checkpoint: str, tiny: bool = False, seed: int = 0, vqa_file: str | None = None,
                  geneval_metadata: str | None = None, geneval_out: str | None = None,
                  samples_per_prompt: int = 4, split: str = "eval") -> dict[str, float]:
    """The built-in held-out sets (`split` eval or validation), or external files when `vqa_file` /
    `geneval_metadata` are given."""
    config = dataclasses.replace(EvalConfig.tiny() if tiny else EvalConfig(seed=seed), split=split)
    tracker = Tracker(Settings.from_env().mlflow_uri, "asg-evaluate")
    with tracker.run("evaluate", tags={"checkpoint": checkpoint}):
        tracker.log_params({"checkpoint": checkpoint, "vqa_file": vqa_file, "geneval_metadata": geneval_metadata,
                            "samples_per_prompt": samples_per_prompt, "seed": seed, "split": split})
        metrics: dict[str, float] = {}
        for prefix, path, field in (("vqa_file", vqa_file, "question"), ("geneval", geneval_metadata, "prompt")):
            if path:
                coverage = measure_vocabulary_coverage(checkpoint, path, field)
                for line in coverage_lines(coverage, path):
                    print(line)
                metrics.update(coverage_metrics(coverage, prefix))
                tracker.log_dict({"file": path, **dataclasses.asdict(coverage)}, f"vocabulary/{prefix}.json")
        if vqa_file:
            metrics.update(evaluate_vqa_file(checkpoint, vqa_file).metrics)
        if geneval_metadata:
            if not geneval_out:
                raise ValueError("--geneval-metadata needs --geneval-out (the folder to write samples into)")
            metrics.update(generate_geneval_samples(checkpoint, geneval_metadata, geneval_out, samples_per_prompt,
                                                    seed=seed).metrics)
        if not (vqa_file or geneval_metadata):
            metrics = evaluate_checkpoint(checkpoint, -1, config).metrics
        tracker.log_metrics(metrics)
    return metrics
