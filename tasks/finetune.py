"""Fine-tune stage: update each role's adapter on its kept examples, mixed with seed replay.

Starts from the round's input checkpoint (base + the previous round's adapters), trains the
Solver, Proposer and Generator adapters in turn, and writes the new checkpoint folder.
Seed replay (`replay_fraction`) keeps each role anchored to the labeled seed set it was
pretrained on; the matched control uses the same replay and steps.
"""

from __future__ import annotations

import random

from prefect import task
from tqdm.auto import tqdm

from models.protocol import TrainingExample
from models.registry import load_backbone
from models.training import TrainConfig, train
from models.vocabulary import FRAMINGS
from storage.checkpoints import local_checkpoint, publish_checkpoint, staging_dir
from storage.settings import Settings
from storage.tables import connect, read
from tasks.round_inputs import images_by_id
from tasks.stage_result import StageResult
from world.seed_set import seed_examples

ROLE_KINDS = {"solver": ("vqa", "caption"), "proposer": ("ask", "spec"), "generator": ("t2i",)}


def stored_examples(db, round_idx: int, role: str) -> list[TrainingExample]:
    frame = read(db, "training_examples", where=f"round_idx = {round_idx} AND role = '{role}'")
    frame = frame.sort_values("example_id")
    out = []
    for table in ("images", "generations"):
        part = frame[frame["image_table"] == table]
        key = "image_id" if table == "images" else "generation_id"
        images = images_by_id(db, table, key, part["image_key"].tolist())
        for row, image in zip(part.to_dict("records"), images):
            if row["kind"] == "t2i":
                out.append(TrainingExample("t2i", prompt=row["prompt"], target_image=image, weight=row["weight"]))
            else:
                out.append(TrainingExample(row["kind"], image=image, prompt=row["prompt"], target=row["target"],
                                           weight=row["weight"]))
    return out


def replay_examples(seed_scenes: int, seed: int, role: str) -> list[TrainingExample]:
    return [TrainingExample(**e) for e in seed_examples(seed_scenes, seed, FRAMINGS) if e["kind"] in ROLE_KINDS[role]]


@task(name="finetune-roles")
def finetune_roles(round_idx: int, checkpoint_uri: str, output_uri: str, steps: dict[str, int], lr: float,
                   batch_size: int, replay_fraction: float, seed_scenes: int, seed: int = 0) -> StageResult:
    settings = Settings.from_env()
    db = connect(settings)
    # A private copy, not the per-process cache: the input checkpoint must stay as it was.
    backbone = load_backbone(local_checkpoint(checkpoint_uri, settings))
    backbone.attach_roles()
    metrics: dict[str, float] = {}
    for role, n_steps in steps.items():
        own = stored_examples(db, round_idx, role)
        replay = replay_examples(seed_scenes, seed, role)
        metrics[f"{role}_examples"] = len(own)
        if n_steps <= 0 or not own:
            continue
        batches = _mixed(own, replay, replay_fraction, batch_size, seed + round_idx)
        bar = tqdm(total=n_steps, desc=f"finetune {role}", unit="step")
        losses = train(backbone, role, batches, TrainConfig(steps=n_steps, lr=lr, warmup_steps=min(20, n_steps // 5),
                                                            seed=seed + round_idx),
                       lambda *_: bar.update(1))
        bar.close()
        metrics[f"{role}_loss_first"] = losses[0]
        metrics[f"{role}_loss_last"] = sum(losses[-10:]) / len(losses[-10:])
    local = staging_dir(settings)
    backbone.save(local)
    publish_checkpoint(local, output_uri, settings)
    return StageResult("finetune", round_idx, {}, sum(int(metrics.get(f"{r}_examples", 0)) for r in steps), metrics)


def _mixed(own, replay, replay_fraction, batch_size, seed):
    """Endless batches drawing each example from replay with probability `replay_fraction`."""
    rng = random.Random(seed)
    while True:
        yield [rng.choice(replay if replay and rng.random() < replay_fraction else own) for _ in range(batch_size)]
