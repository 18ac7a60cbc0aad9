"""Matched-control stage: the same update steps, learning rate and replay as a round, on the labeled
seed set only (no self-generated data). Any gain of self-evolution must beat this.
"""

from __future__ import annotations

from models.registry import load_backbone
from storage.checkpoints import local_checkpoint, save_checkpoint
from storage.settings import Settings
from tasks.finetune import imitate_role, replay_examples
from tasks.stage import stage_task
from tasks.stage_result import StageResult
from tasks.logic.stage_seeds import stage_seed


@stage_task("control", "control-finetune")
def control_finetune(round_idx: int, checkpoint_uri: str, output_uri: str, steps: dict[str, int], lr: float,
                     batch_size: int, seed_scenes: int, seed: int = 0, seed_set_seed: int = 0, namespace: str = "") -> StageResult:
    settings = Settings.from_env().within(namespace)
    backbone = load_backbone(local_checkpoint(checkpoint_uri, settings))
    backbone.attach_roles()
    metrics: dict[str, float] = {}
    for role, n_steps in steps.items():
        if n_steps <= 0:
            continue
        seed_data = replay_examples(seed_scenes, seed_set_seed, role)  # the base's own labeled set
        metrics.update(imitate_role(backbone, role, seed_data, n_steps, lr, batch_size, 1.0, seed_data,
                                stage_seed("finetune", seed, round_idx, role)))
    save_checkpoint(backbone, output_uri, settings)
    return StageResult("control", round_idx, {}, 0, metrics)
