"""The demo: evaluate the shipped base, run one self-evolution round on unlabeled scenes,
evaluate again and print a before/after table. Needs no server (Prefect's local mode,
LanceDB and MLflow under $ASG_HOME).

    asg demo                      # 1,000 unlabeled scenes, full evaluation
    asg demo --images 100 --quick # a smoke run
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.pretrain import pretrain_flow
from flows.round import RoundConfig, round_flow
from flows.tracking import Tracker
from storage.settings import Settings, redacted
from tasks.evaluate import evaluate_checkpoint
from tasks.logic.file_accounting import summary_line

# The base `asg demo`, `asg evaluate`, `asg experiment` and the nightly deployment start from (2026-12-08: the
# relation-reading base v2, chosen on the validation split; compose's gains on it are in the README), and the
# pretraining that rebuilds it when the folder is missing (its card: models/checkpoints/shapes-reading-base-v2).
SHIPPED_BASE = Path(__file__).resolve().parent.parent / "models" / "checkpoints" / "shapes-reading-base-v2"
SHIPPED_BASE_RECIPE = {"steps": 7000, "lr": 3e-3, "relation_reading": True, "t2i_per_scene": 3,
                       "mix": {"vqa": 0.37, "relate": 0.18, "caption": 0.08, "ask": 0.07, "spec": 0.10, "t2i": 0.20}}
HEADLINE = ("vqa_accuracy", "vqa_color", "vqa_shape", "vqa_count", "vqa_exist", "vqa_relation",
            "geneval_overall", "geneval_single_object", "geneval_two_object", "geneval_counting", "geneval_colors",
            "geneval_position", "geneval_color_attr", "caption_accuracy", "proposer_well_posed")


def before_after_table(before: dict[str, float], after: dict[str, float]) -> str:
    lines = [f"{'metric':<24}{'base':>8}{'round 0':>9}{'change':>9}", "-" * 50]
    for key in HEADLINE:
        if key in before and key in after:
            lines.append(f"{key:<24}{before[key]:>8.3f}{after[key]:>9.3f}{after[key] - before[key]:>+9.3f}")
    return "\n".join(lines)


@flow(name="asg-demo", log_prints=True)
def demo_flow(config: RoundConfig = RoundConfig(), base_checkpoint: str = str(SHIPPED_BASE)) -> dict:
    settings = Settings.from_env()
    if not (Path(base_checkpoint) / "config.json").is_file():
        print(f"no base checkpoint at {base_checkpoint}: pretraining one first (about 30 minutes on 2 cores)")
        pretrain_flow(base_checkpoint, seed_scenes=config.finetune.seed_scenes, seed=config.seed,
                      **SHIPPED_BASE_RECIPE)
    before = evaluate_checkpoint(base_checkpoint, -1, config.eval_config()).metrics
    Tracker(settings.mlflow_uri, "asg-evolution")  # the experiment exists before the round's run
    result = round_flow(0, base_checkpoint, config)
    after = {k.removeprefix("evaluate."): v for k, v in result.items() if k.startswith("evaluate.")}
    table = before_after_table(before, after)
    print("\n" + summary_line({k.removeprefix("ingest."): v for k, v in result.items() if k.startswith("ingest.")}))
    print("\n" + table)
    print(f"\nround 0 checkpoint: {result['checkpoint']}\nLanceDB: {redacted(settings.lancedb_uri)}\nMLflow: {redacted(settings.mlflow_uri)}")
    return {"before": before, "after": after, "table": table, **result}
