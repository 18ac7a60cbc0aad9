"""Pretraining tasks: train the base on the labeled seed set, then check it converged.

The convergence check is the matched control of a round: it fine-tunes the Solver
adapter on seed data only, for as many steps as a round fine-tunes, and reports how far
held-out VQA moves. Under a point means self-evolution gains are not extra training.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import task
from tqdm.auto import tqdm

from models.protocol import TrainingExample
from models.registry import create_backbone, load_backbone
from models.training import TrainConfig, mixture_batches, train
from models.vocabulary import FRAMINGS
from storage.checkpoints import local_checkpoint, save_checkpoint
from storage.settings import Settings
from tasks.logic.held_out_evaluation import EvalConfig, evaluate, evaluate_geneval, evaluate_vqa
from tasks.logic.pretrain_mix import PRETRAIN_MIX, RELATION_READING_MIX
from world.seed_set import relation_reading_examples, seed_examples



@dataclass(frozen=True)
class PretrainResult:
    checkpoint_uri: str
    losses: list[float]
    lrs: list[float]
    validation: list[tuple[int, float]]
    metrics: dict[str, float]
    validation_metric: str = "vqa_accuracy"


@task(name="pretrain-base")
def pretrain_base(backbone_name: str, size: str, seed_scenes: int, schedule: TrainConfig, batch_size: int,
                  checkpoint_uri: str, eval_config: EvalConfig, t2i_per_scene: int = 1,
                  validate_every: int = 500, init_from: str | None = None,
                  relation_reading: bool = False, mix: dict[str, float] | None = None) -> PretrainResult:
    """Pretrain a base on the labeled seed set. With `init_from`, a latent-generator backbone takes
    that checkpoint's understanding trunk and trains only its denoiser (on the seed set's t2i pairs).
    `relation_reading` builds a base that reads relations (models/relation_reading.py) and trains it on the seed
    scenes' `relation_reading_examples` too; with `init_from` the trunk's checkpoint decides it. `mix` replaces
    the default mixture (tasks/logic/pretrain_mix.py) of a whole base."""
    settings = Settings.from_env()
    if init_from:
        backbone = create_backbone(backbone_name, seed=schedule.seed, size=size, freeze_understanding=True)
        if not hasattr(backbone, "init_understanding_from"):
            raise ValueError(f"backbone {backbone_name!r} cannot start from another checkpoint's trunk")
        backbone.init_understanding_from(local_checkpoint(init_from, settings))
    else:
        reading = {"relation_reading": True} if relation_reading else {}
        backbone = create_backbone(backbone_name, seed=schedule.seed, size=size, **reading)
    examples = [TrainingExample(**e) for e in seed_examples(seed_scenes, schedule.seed, FRAMINGS, t2i_per_scene)]
    if init_from:
        batches = mixture_batches(examples, {"t2i": 1.0}, batch_size, schedule.seed)
    elif getattr(backbone.config, "relation_reading", False):
        relate = [TrainingExample(**e) for e in relation_reading_examples(seed_scenes, schedule.seed)]
        batches = mixture_batches(examples, mix or RELATION_READING_MIX, batch_size, schedule.seed, {"relate": relate})
    else:
        batches = mixture_batches(examples, mix or PRETRAIN_MIX, batch_size, schedule.seed)
    lrs: list[float] = []
    validation: list[tuple[int, float]] = []
    # Validation follows what trains: VQA for a whole base, GenEval-2D when only the denoiser learns.
    small_eval = EvalConfig(vqa_scenes=100, geneval_per_category=10, samples_per_prompt=2, seed=eval_config.seed,
                            split="validation")
    metric = "geneval_overall" if init_from else "vqa_accuracy"
    validate = evaluate_geneval if init_from else evaluate_vqa
    bar = tqdm(total=schedule.steps, desc="pretrain", unit="step")

    def on_step(step: int, loss: float, lr: float) -> None:
        lrs.append(lr)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.1e}", refresh=False)
        if (step + 1) % validate_every == 0 or step + 1 == schedule.steps:
            backbone.network.eval()
            validation.append((step + 1, validate(backbone, small_eval)[metric]))
            backbone.network.train()
            bar.write(f"step {step + 1}: validation {metric} {validation[-1][1]:.3f}")

    losses = train(backbone, None, batches, schedule, on_step)
    bar.close()
    metrics = evaluate(backbone, eval_config)
    save_checkpoint(backbone, checkpoint_uri, settings)
    return PretrainResult(checkpoint_uri, losses, lrs, validation, metrics, metric)


@task(name="check-convergence")
def check_convergence(checkpoint_uri: str, seed_scenes: int, steps: int, lr: float, batch_size: int,
                      eval_config: EvalConfig, seed: int) -> dict[str, float]:
    """Held-out VQA before and after `steps` seed-only Solver steps (the matched control)."""
    from storage.checkpoints import local_checkpoint

    settings = Settings.from_env()
    backbone = load_backbone(local_checkpoint(checkpoint_uri, settings))
    backbone.attach_roles()
    before = evaluate_vqa(backbone, eval_config)["vqa_accuracy"]
    vqa = [TrainingExample(**e) for e in seed_examples(seed_scenes, seed, FRAMINGS) if e["kind"] == "vqa"]
    config = TrainConfig(steps=steps, lr=lr, warmup_steps=0, min_lr_ratio=1.0, seed=seed)
    bar = tqdm(total=steps, desc="convergence check", unit="step")
    train(backbone, "solver", mixture_batches(vqa, {"vqa": 1.0}, batch_size, seed), config,
          lambda *_: bar.update(1))
    bar.close()
    after = evaluate_vqa(backbone, eval_config)["vqa_accuracy"]
    return {"control_vqa_before": before, "control_vqa_after": after, "control_vqa_delta": after - before}


@task(name="write-checkpoint-card")
def write_checkpoint_card(checkpoint_uri: str, card: dict) -> None:
    from storage.checkpoints import write_card

    write_card(checkpoint_uri, card, Settings.from_env())
