"""One self-evolution round as a Prefect flow: ingest, propose, solve and vote, generate,
score, filter, fine-tune, evaluate. Owns the round's MLflow run.

    asg round --round-idx 0 --checkpoint models/checkpoints/shapes-base
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import pandas as pd
from prefect import flow
from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.runtime import flow_run as prefect_flow_run
from pydantic import BaseModel, Field, field_validator

from flows.task_runners import task_runner
from flows.lineage import record_round_lineage
from flows.tracking import Tracker
from storage.checkpoints import checkpoint_uri, local_checkpoint
from storage.leases import round_lease
from storage.settings import Settings, refuse_credentials
from storage.shard_files import remove_round_shards
from tasks.check_backbone import check_backbone
from tasks.compose import compose_scenes
from tasks.cross_check import cross_check_questions, cross_check_shard
from tasks.diagnose import diagnose_round
from tasks.evaluate import evaluate_checkpoint
from tasks.filter import filter_examples
from tasks.finetune import finetune_roles
from tasks.generate import generate_images, generate_shard
from tasks.ingest import ingest_images, ingest_shard
from tasks.propose import propose_questions, propose_shard
from tasks.report import write_round_report
from tasks.score import score_generations, score_shard
from tasks.solve import solve_and_vote, solve_shard
from tasks.stage_cache import inputs_key, refreshing_cache
from tasks.stage_result import ShardResult, StageResult
from tasks.tile_verify import verify_generations
from tasks.logic.held_out_evaluation import EvalConfig
from tasks.logic.presets import recipe_of, role_steps


class RoundConfig(BaseModel):
    """Parameters of a round (the deployment's parameter schema)."""

    source: str = Field("world://unlabeled?n=1000&seed=0", description="unlabeled images: world://… or a folder URL")

    @field_validator("source")
    @classmethod
    def _no_credentials_in_source(cls, value: str) -> str:
        return refuse_credentials(value)  # the source is stored as a flow parameter and an MLflow param
    n_images: int = Field(1000, ge=1, description="images sampled from the source for this round")
    image_size: int = Field(32, ge=8, description="backbone input size images are resized to")
    n_candidates: int = Field(3, ge=1, description="K candidate questions per image")
    n_samples: int = Field(7, ge=1, description="N Solver answers per question")
    n_per_prompt: int = Field(3, ge=1, description="L generated images per spec")
    n_check_answers: int = Field(3, ge=1, description="Solver answers per check when scoring an image")
    temperature: float = Field(1.0, gt=0, description="Proposer and Generator sampling temperature")
    preset: Literal["paper", "verified", "agreement", "compose", "gold-ceiling"] = Field(
        "compose", description="compose (default, the best recipe measured here): the Solver learns scenes "
                               "recomposed from the tiles it named (labels known by construction), the Generator the "
                               "best tile-verified image of each spec, with seed replay; paper: METHOD.md's rewards "
                               "and RL updates, exactly as written; verified: imitation of confident and "
                             "Solver-verified items with seed replay; agreement: imitation of majority labels that "
                             "the mirrored-image and caption-drawn views confirm, with seed replay; gold-ceiling: "
                             "NOT a method, the same items with the world's true labels (the ceiling of any source)")
    compose_per_image: int = Field(2, ge=1, description="compose preset: recomposed scenes per unlabeled image")
    compose_relation_questions: int = Field(0, ge=0, description="compose preset: extra relation questions per "
                                                                 "recomposed scene (beside 8 over all families)")
    targeted_share: float = Field(0.6, ge=0, description="compose preset: extra specs aimed at the weakest GenEval "
                                  "categories, per round image (0.6: 600 for 1,000 images), drawn best-of-"
                                  "`targeted_per_prompt`")
    targeted_per_prompt: int = Field(8, ge=1, description="compose preset: samples per targeted spec")
    mode: Literal["joint", "understanding", "generation"] = Field(
        "joint", description="ablation: collect and train only the understanding or only the generation side")
    use_ste: bool = Field(True, description="ablation: STE off selects the first well-formed candidate")
    ste_aggregate: Literal["max", "mean"] = Field("max", description="ablation: mean instead of max STE")
    use_framings: bool = Field(True, description="ablation: off answers every sample under the canonical framing")
    use_fidelity: bool = Field(True, description="ablation: leave QA fidelity out of R_g")
    use_cycle: bool = Field(True, description="ablation: leave cycle consistency out of R_g")
    finetune_steps: dict[str, int] | None = Field(
        None, description="update steps per role; unset: the preset's default (compose and gold-ceiling "
                          "480/240/480, paper, verified and agreement 120/60/120; see tasks/logic/presets.py)")
    lr: float = Field(1e-3, gt=0, description="peak LoRA learning rate of the verified preset's imitation")
    policy_lr: float = Field(1e-4, gt=0, description="LoRA learning rate of the paper preset's policy updates")
    batch_size: int = Field(64, ge=1)
    replay_fraction: float = Field(0.5, ge=0, le=1, description="share of each batch replayed from the seed set")
    seed_scenes: int = Field(300, ge=1, description="seed set size used for replay (same as pretraining)")
    seed_set_seed: int = Field(0, description="seed of the labeled seed set the base was pretrained on; replay and "
                                              "the matched control use exactly that set, whatever `seed` is")
    min_majority_fraction: float = Field(0.4, ge=0, le=1)
    accept_reward: float = Field(0.7, ge=0, le=1, description="R_g at which a generated image is accepted")
    check_label_reward: float = Field(0.7, ge=0, le=1, description="verified preset: R_g at which a generated "
                                      "image's checks become Solver examples")
    max_check_contradiction: float = Field(1.0, ge=0, le=1, description="verified preset: most contradicted "
                                           "share of checks for those Solver examples")
    shards: int = Field(1, ge=1, description="shards per rollout stage (ingest, propose, solve, generate, score); "
                                             "they run on the flow's task runner, see flows/task_runners.py")
    finetune_processes: int = Field(1, ge=1, description="data-parallel ranks of the fine-tune stage (torchrun; "
                                                         "gloo on CPU, NCCL with one GPU per rank)")
    evaluation: Literal["default", "tiny", "none"] = "default"
    eval_seed: int = Field(0, description="seed of the held-out sets; fixed so every arm and round is comparable")
    eval_split: Literal["eval", "validation"] = Field(
        "eval", description="held-out split the round is scored on: validation for choices, eval for reported numbers")
    seed: int = 0

    def role_steps(self) -> dict[str, int]:
        """The update steps per role this round takes (the preset's default unless `finetune_steps` is set)."""
        return role_steps(self.preset, self.finetune_steps)

    def eval_config(self) -> EvalConfig:
        if self.evaluation == "tiny":
            return replace(EvalConfig.tiny(), split=self.eval_split)
        return EvalConfig(seed=self.eval_seed, split=self.eval_split)


def fan_out(shard_task, n_shards: int, **params) -> list[ShardResult]:
    """Run one task per shard: submitted to the flow's task runner when it runs tasks elsewhere (Dask, Ray),
    called one after another in the flow's main thread when it is the in-process runner (torch's CPU kernels
    run about 1.4x slower from a worker thread, whose OpenMP team is created anew)."""
    context = FlowRunContext.get()
    if context is None or isinstance(context.task_runner, ThreadPoolTaskRunner):
        return [shard_task(shard_idx=s, n_shards=n_shards, **params) for s in range(n_shards)]
    futures = [shard_task.submit(shard_idx=s, n_shards=n_shards, **params) for s in range(n_shards)]
    return [f.result() for f in futures]


def _merged(stage: StageResult, shards: list[ShardResult]) -> StageResult:
    """The merge step's result plus how its shards ran (logged with the stage's metrics)."""
    return replace(stage, metrics={**stage.metrics, "shards": len(shards),
                                   "shard_processes": len({s.pid for s in shards}),
                                   "shard_backbone_loads_max": max(s.backbone_loads for s in shards),
                                   "shard_seconds_sum": sum(s.seconds for s in shards),
                                   "shard_seconds_max": max(s.seconds for s in shards)})


def rollout_stages(round_idx: int, checkpoint: str, config: RoundConfig) -> list[StageResult]:
    """Ingest, propose, solve, generate and score: each fanned out over `config.shards` shards on the
    flow's task runner, then merged."""
    n = config.shards
    recipe = recipe_of(config.preset)
    ingested = fan_out(ingest_shard, n, source=config.source, image_size=config.image_size)
    stages = [_merged(ingest_images(config.source, n, ingested), ingested)]
    if config.mode != "generation" and recipe.composes_scenes:
        stages.append(compose_scenes(round_idx, checkpoint, config.source, config.n_images, config.seed,
                                     config.compose_per_image, relation_questions=config.compose_relation_questions))
    if config.mode != "generation":
        proposed = fan_out(propose_shard, n, round_idx=round_idx, checkpoint_uri=checkpoint, source=config.source,
                           n_images=config.n_images, n_candidates=config.n_candidates,
                           temperature=config.temperature, seed=config.seed, ste_aggregate=config.ste_aggregate)
        stages.append(_merged(propose_questions(round_idx, n, config.n_candidates, config.use_ste, proposed), proposed))
        solved = fan_out(solve_shard, n, round_idx=round_idx, checkpoint_uri=checkpoint, n_samples=config.n_samples,
                         seed=config.seed, use_framings=config.use_framings)
        stages.append(_merged(solve_and_vote(round_idx, n, solved), solved))
        checked = fan_out(cross_check_shard, n, round_idx=round_idx, checkpoint_uri=checkpoint,
                          temperature=config.temperature, seed=config.seed)
        stages.append(_merged(cross_check_questions(round_idx, n, checked), checked))
    if config.mode != "understanding":
        drawn = fan_out(generate_shard, n, round_idx=round_idx, checkpoint_uri=checkpoint, source=config.source,
                        n_images=config.n_images, n_per_prompt=config.n_per_prompt,
                        temperature=config.temperature, seed=config.seed,
                        targeted_specs=round(config.targeted_share * config.n_images)
                        if recipe.targets_weak_categories else 0,
                        targeted_per_prompt=config.targeted_per_prompt)
        stages.append(_merged(generate_images(round_idx, n, drawn), drawn))
        scored = fan_out(score_shard, n, round_idx=round_idx, checkpoint_uri=checkpoint,
                         n_answers=config.n_check_answers, seed=config.seed, use_fidelity=config.use_fidelity,
                         use_cycle=config.use_cycle)
        stages.append(_merged(score_generations(round_idx, n, scored), scored))
        if recipe.verifies_tiles:
            stages.append(verify_generations(round_idx, checkpoint, config.source, config.n_images, config.seed))
    return stages


def execute_round(round_idx: int, checkpoint: str, config: RoundConfig, tracker: Tracker) -> dict:
    """The stage sequence of one round, inside an open MLflow run of `tracker` (shared by the
    round and nightly flows; not a subflow, so a retried flow run resumes its own cached stages)."""
    settings = Settings.from_env()
    output = checkpoint_uri(settings, f"round-{round_idx}")
    tracker.log_params({"round_idx": round_idx, "input_checkpoint": checkpoint, "output_checkpoint": output,
                        **config.model_dump(), "finetune_steps": config.role_steps()})
    check_backbone(checkpoint)  # fails before anything is written when a capability is missing
    stages = rollout_stages(round_idx, checkpoint, config)
    stages.append(filter_examples(round_idx, config.preset, config.mode, config.min_majority_fraction,
                                  config.accept_reward, config.check_label_reward,
                                  config.max_check_contradiction))
    lr = config.policy_lr if recipe_of(config.preset).update == "policy" else config.lr
    stages.append(finetune_roles(round_idx, checkpoint, output, config.role_steps(), lr,
                                 config.batch_size, config.replay_fraction, config.seed_scenes, config.preset,
                                 config.seed, config.seed_set_seed, config.finetune_processes))
    if config.evaluation != "none":
        stages.append(evaluate_checkpoint(output, round_idx, config.eval_config()))
    stages.append(diagnose_round(round_idx, config.accept_reward))
    for stage in stages:
        tracker.log_metrics(stage.metrics, step=round_idx, prefix=f"{stage.stage}.")
        tracker.set_tags({f"table_version.{t}": str(v) for t, v in stage.tables.items()})
    remove_round_shards(settings, round_idx)  # its rows are in LanceDB now
    tracker.set_tags(record_round_lineage(round_idx, output, str(prefect_flow_run.id or ""), settings))
    report_dir = settings.home / "reports" / f"round-{round_idx}"
    qa_sample = write_round_report(round_idx, str(report_dir))
    tracker.log_artifacts(str(report_dir), "report")
    tracker.log_table(pd.DataFrame(qa_sample), "qa_sample.json")
    tracker.log_artifacts(str(local_checkpoint(output, settings)), "checkpoint")
    return {"checkpoint": output, **{f"{s.stage}.{k}": v for s in stages for k, v in s.metrics.items()}}


@flow(name="asg-round", log_prints=True, task_runner=task_runner())
def round_flow(round_idx: int, checkpoint: str, config: RoundConfig = RoundConfig(),
               experiment: str = "asg-evolution", run_prefix: str = "") -> dict:
    settings = Settings.from_env()
    tracker = Tracker(settings.mlflow_uri, experiment)
    # One live run per round of a store: a second one fails fast here, before anything is written or tracked.
    # A re-run with the same inputs (after a crash: a new flow run) reopens the MLflow run of the one that died.
    resume_key = inputs_key(dict(round_idx=round_idx, checkpoint=checkpoint, config=config, experiment=experiment,
                                 run_prefix=run_prefix))
    with round_lease(settings, f"round-{round_idx}", settings.lease_ttl_s), \
            tracker.run(f"{run_prefix}round-{round_idx}", tags={"round_idx": str(round_idx)},
                        resume_key=resume_key, fresh=refreshing_cache()):
        return execute_round(round_idx, checkpoint, config, tracker)
