"""Evaluate stage: score a checkpoint on the embedded world's held-out sets.

Ground truth is read here and only here (and in diagnostics); results go to the
`evaluations` table and are returned for the flow to log.
"""

from __future__ import annotations

import json

from prefect import task

from storage.settings import Settings
from storage.tables import connect, upsert
from tasks.round_inputs import backbone_for
from tasks.stage_result import StageResult
from world.evaluation import EvalConfig, evaluate


@task(name="evaluate-checkpoint")
def evaluate_checkpoint(checkpoint_uri: str, round_idx: int, eval_config: EvalConfig) -> StageResult:
    settings = Settings.from_env()
    metrics = evaluate(backbone_for(checkpoint_uri, settings), eval_config)
    suite = f"shapes-world-seed{eval_config.seed}-vqa{eval_config.vqa_scenes}-gen{eval_config.geneval_per_category}"
    db = connect(settings)
    version = upsert(db, "evaluations", [{
        "evaluation_id": f"{checkpoint_uri}:{suite}", "checkpoint_uri": checkpoint_uri, "round_idx": round_idx,
        "suite": suite, "metrics_json": json.dumps(metrics)}])
    return StageResult("evaluate", round_idx, {"evaluations": version}, 1, metrics)
