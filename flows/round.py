"""One self-evolution round as a Prefect flow, read as a recipe: ingest, (compose,) propose, solve and vote,
cross-check, generate, score, (tile-verify,) filter, fine-tune, evaluate, diagnose, report. Owns the round's
MLflow run; its parameters are `RoundConfig` (flows/round_config.py), each stage gets its section.

    asg round --round-idx 0 --checkpoint models/checkpoints/shapes-base
"""

from __future__ import annotations

import time

import pandas as pd
from prefect import flow
from prefect.runtime import flow_run as prefect_flow_run

from flows.lineage import record_round_lineage
from flows.round_config import RoundConfig, dotted_params
from flows.task_runners import task_runner
from flows.tracking import Tracker
from storage.checkpoints import checkpoint_uri, local_checkpoint
from storage.leases import round_lease
from storage.settings import Settings
from storage.shard_files import remove_round_shards
from tasks.check_backbone import check_backbone
from tasks.compose import compose_scenes
from tasks.cross_check import CROSS_CHECK
from tasks.diagnose import diagnose_round
from tasks.evaluate import evaluate_checkpoint
from tasks.filter import filter_examples
from tasks.finetune import finetune_roles
from tasks.generate import GENERATE
from tasks.ingest import INGEST
from tasks.propose import PROPOSE
from tasks.report import write_round_report
from tasks.score import SCORE
from tasks.sharded_stage import run_stage
from tasks.solve import SOLVE
from tasks.stage_cache import inputs_key, refreshing_cache
from tasks.stage_result import StageResult, handed
from tasks.tile_verify import verify_generations
from tasks.logic.presets import recipe_of


def rollout_stages(round_idx: int, checkpoint: str, config: RoundConfig, namespace: str = "") -> list[StageResult]:
    """Ingest, propose, solve, cross-check, generate and score, each over `config.shards` shards on the flow's
    task runner (tasks/sharded_stage.py), plus the compose and tile-verify stages of the presets that use them;
    every table and object in the store's `namespace`. Each stage reads the tables the stages before it wrote at
    the versions they handed on (`handed`), not whatever is newest."""
    recipe = recipe_of(config.preset)
    stages: list[StageResult] = []
    model = {"round_idx": round_idx, "checkpoint_uri": checkpoint}
    images = {"source": config.source, "n_images": config.n_images}

    def sharded(stage, shard_args: dict, merge_args: dict | None = None) -> None:
        inputs = {"tables": handed(stages)}
        stages.append(run_stage(stage, config.shards, namespace, {**shard_args, **inputs},
                                {**(merge_args or {"round_idx": round_idx}), **inputs}))

    ns = {"namespace": namespace}
    stages.append(run_stage(INGEST, config.shards, namespace,
                            {"source": config.source, "image_size": config.ingest.image_size}, {"source": config.source}))
    if config.mode != "generation" and recipe.composes_scenes:
        stages.append(compose_scenes(round_idx, checkpoint, config.source, config.n_images, config.seed,
                                     config.compose, tables=handed(stages), **ns))
    if config.mode != "generation":
        sharded(PROPOSE, {**model, **images, "config": config.propose, "seed": config.seed},
                {"round_idx": round_idx, "config": config.propose})
        sharded(SOLVE, {**model, "config": config.solve, "seed": config.seed})
        sharded(CROSS_CHECK, {**model, "temperature": config.generate.temperature, "seed": config.seed})
    if config.mode != "understanding":
        targeted = round(config.generate.targeted_share * config.n_images) if recipe.targets_weak_categories else 0
        sharded(GENERATE, {**model, **images, "config": config.generate, "seed": config.seed,
                           "targeted_specs": targeted})
        sharded(SCORE, {**model, "config": config.score, "seed": config.seed})
        if recipe.verifies_tiles:
            stages.append(verify_generations(round_idx, checkpoint, config.source, config.n_images, config.seed,
                                             tables=handed(stages), corrections=config.generate.tile_corrections,
                                             **ns))
    return stages


def execute_round(round_idx: int, checkpoint: str, config: RoundConfig, tracker: Tracker,
                  namespace: str = "") -> dict:
    """The stage sequence of one round, inside an open MLflow run of `tracker` (shared by the
    round and nightly flows; not a subflow, so a retried flow run resumes its own cached stages)."""
    started = time.perf_counter()
    settings = Settings.from_env().within(namespace)
    ns = {"namespace": namespace}
    output = checkpoint_uri(settings, f"round-{round_idx}")
    tracker.log_params({"round_idx": round_idx, "input_checkpoint": checkpoint, "output_checkpoint": output,
                        **dotted_params(config)})
    check_backbone(checkpoint)  # fails before anything is written when a capability is missing
    timing = {"setup_seconds": time.perf_counter() - started}
    stages = rollout_stages(round_idx, checkpoint, config, namespace)
    stages.append(filter_examples(round_idx, config.preset, config.mode, config.filter, tables=handed(stages), **ns))
    stages.append(finetune_roles(round_idx, checkpoint, output, config.preset, config.finetune, config.seed,
                                 tables=handed(stages), **ns))
    if config.evaluate.kind != "none":
        stages.append(evaluate_checkpoint(output, round_idx, config.eval_config(), **ns))
    if config.evaluate.diagnose:
        stages.append(diagnose_round(round_idx, config.filter.accept_reward, tables=handed(stages), **ns))
    wrapup = time.perf_counter()
    for stage in stages:
        tracker.log_metrics(stage.metrics, step=round_idx, prefix=f"{stage.stage}.")
        tracker.set_tags({f"table_version.{t}": str(v) for t, v in stage.tables.items()})
    remove_round_shards(settings, round_idx)  # its rows are in LanceDB now
    tracker.set_tags(record_round_lineage(round_idx, output, str(prefect_flow_run.id or ""), settings))
    report_dir = settings.home / "reports" / namespace / f"round-{round_idx}"
    qa_sample = write_round_report(round_idx, str(report_dir), tables=handed(stages), **ns)
    tracker.log_artifacts(str(report_dir), "report")
    tracker.log_table(pd.DataFrame(qa_sample), "qa_sample.json")
    tracker.log_artifacts(str(local_checkpoint(output, settings)), "checkpoint")
    # Where the round's time goes outside its stages' own work: before the first stage, after the last, and (the
    # rest of the total) Prefect's task runs between them.
    ended = time.perf_counter()
    timing.update(wrapup_seconds=ended - wrapup, total_seconds=ended - started)
    tracker.log_metrics(timing, step=round_idx, prefix="round.")
    return {"checkpoint": output, **{f"{s.stage}.{k}": v for s in stages for k, v in s.metrics.items()},
            **{f"round.{k}": v for k, v in timing.items()}}


@flow(name="asg-round", log_prints=True, task_runner=task_runner())
def round_flow(round_idx: int, checkpoint: str, config: RoundConfig = RoundConfig(),
               experiment: str = "asg-evolution", run_prefix: str = "", namespace: str = "") -> dict:
    """`namespace` gives the round its own tables and objects inside the store (`asg experiment`: one per arm)."""
    settings = Settings.from_env().within(namespace)
    tracker = Tracker(settings.mlflow_uri, experiment)
    # One live run per round of a store: a second one fails fast here, before anything is written or tracked.
    # A re-run with the same inputs (after a crash: a new flow run) reopens the MLflow run of the one that died.
    resume_key = inputs_key(dict(round_idx=round_idx, checkpoint=checkpoint, config=config, experiment=experiment,
                                 run_prefix=run_prefix, namespace=namespace))
    with round_lease(settings, f"round-{round_idx}", settings.lease_ttl_s), \
            tracker.run(f"{run_prefix}round-{round_idx}", tags={"round_idx": str(round_idx)},
                        resume_key=resume_key, fresh=refreshing_cache()):
        return execute_round(round_idx, checkpoint, config, tracker, namespace)
