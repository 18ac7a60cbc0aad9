"""Preference updates of one role's adapter on pairs of its own samples (DPO; Diffusion-DPO for denoisers).

A pair is two examples of the same prompt: the `chosen` one the model's own verification accepted, the
`rejected` one it did not. With nll(x) the role's `Backbone.example_nll` (mean target-token NLL for text, the
denoising loss for a t2i example) and nll_ref the same under the reference (`reference="base"`: adapters off;
`"start"`: the role's adapter as the update found it, in eval mode), the loss of a pair is

    L = -log sigmoid(-beta * [(nll(w) - nll_ref(w)) - (nll(l) - nll_ref(l))]) + sft_weight * nll(w)

(Rafailov et al. 2023; Wallace et al. 2023 for the denoising form, where the NLL is the denoising error on
shared (t, noise) draws). Both examples of a pair carry the same `draw`, so a denoiser scores them, and the
reference scores them, on the same noise; every step draws anew; and `keep_prompt`, so neither is scored with its
prompt dropped (measured on the flow base: dropping made no difference at beta 2000, validation 0.776 vs 0.771). The log-sigmoid saturates once a pair is
ranked, so unlike imitation it cannot pull the model far from the reference on pairs already right; the
optional `sft_weight` keeps the chosen samples likely (the reference's own samples, so a small pull).

Data-parallel under torch.distributed like models/policy_training.py: every rank draws the same pair indices
and trains on its slice.

    >>> round(float(pair_loss(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.0]),
    ...                       torch.tensor([0.0]), beta=1.0)[0]), 4)
    0.6931
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from models.data_parallel import global_sum, guarded_step, local_slice, role_loss_module, world
from models.protocol import Backbone, TrainingExample


REFERENCES = ("base", "start")  # PreferenceConfig.reference


@dataclass(frozen=True)
class PreferenceConfig:
    steps: int = 240
    lr: float = 1e-3
    beta: float = 2000.0  # the denoising error's differences are ~1e-3; text NLL differences want ~0.1
    sft_weight: float = 0.0
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    warmup_steps: int = 10
    seed: int = 0
    # "base": the reference is the role with its adapter off (the frozen base); "start": the role's adapter as this
    # update found it (in a round, the previous round's), so each update is a step away from where it began
    reference: str = "base"

    def __post_init__(self) -> None:
        if self.reference not in REFERENCES:
            raise ValueError(f"unknown preference reference {self.reference!r}; choose from {', '.join(REFERENCES)}")


@dataclass
class PreferenceStats:
    loss: float
    margin: float  # mean of -[(nll(w) - ref(w)) - (nll(l) - ref(l))]: > 0 when the update ranks the pairs right
    accuracy: float  # share of the batch's pairs ranked right
    skipped: bool


def pair_loss(chosen: torch.Tensor, rejected: torch.Tensor, chosen_ref: torch.Tensor, rejected_ref: torch.Tensor,
              beta: float) -> torch.Tensor:
    """Per-pair DPO loss from NLLs under the policy and the reference."""
    return -F.logsigmoid(-beta * ((chosen - chosen_ref) - (rejected - rejected_ref)))


@contextlib.contextmanager
def weights_swapped(params: Sequence[torch.nn.Parameter], values: Sequence[torch.Tensor]):
    """`params` hold `values` inside the block (no autograd history: use under no_grad) and their own after."""
    own = [p.data for p in params]
    for p, v in zip(params, values):
        p.data = v
    try:
        yield
    finally:
        for p, v in zip(params, own):
            p.data = v


def preference_update(backbone: Backbone, role: str, pairs: Sequence[tuple[TrainingExample, TrainingExample]],
                      batch_size: int, config: PreferenceConfig,
                      on_step: Callable[[int, PreferenceStats], None] | None = None,
                      window: int = 24) -> list[PreferenceStats]:
    """`config.steps` updates on batches of `batch_size` pairs sampled (seeded) from `pairs`. A `pairs` with a
    `window(indices) -> {index: pair}` method (tasks/finetune.py's stored pairs) is read `window` steps at a time."""
    if not len(pairs):
        return []
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    params = backbone.trainable_parameters(role)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(1, config.warmup_steps)))
    network = backbone.network
    rank, size = world()

    start: list[torch.Tensor] = []

    def reference_nll(examples):
        if config.reference == "base":
            return backbone.example_nll(None, examples)
        network.eval()  # the adapter as it was, without its dropout
        try:
            with weights_swapped(params, start):
                return backbone.example_nll(role, examples)
        finally:
            network.train()

    def local_loss(chosen, rejected, scale):
        n = len(chosen)
        with torch.no_grad():
            ref = reference_nll(chosen + rejected)
        nll = backbone.example_nll(role, chosen + rejected)
        gap = (nll[:n] - ref[:n]) - (nll[n:] - ref[n:])
        loss = pair_loss(nll[:n], nll[n:], ref[:n], ref[n:], config.beta) + config.sft_weight * nll[:n]
        return loss.sum() * scale, (-gap).detach().sum(), (gap < 0).float().sum()

    step_loss = role_loss_module(network, params, local_loss)
    # After the module's set-up, which gives every rank rank 0's adapter: the reference is the same on all ranks.
    start.extend(p.detach().clone() for p in params)
    stats: list[PreferenceStats] = []
    plan = [torch.randint(len(pairs), (min(batch_size, len(pairs)),), generator=generator).tolist()
            for _ in range(config.steps)]
    loaded: dict[int, tuple[TrainingExample, TrainingExample]] = {}
    for step, index in enumerate(plan):
        if len(index) < size:
            raise ValueError(f"a batch of {len(index)} pairs cannot be split over {size} ranks")
        if step % window == 0:
            wanted = {i for batch in plan[step:step + window] for i in local_slice(batch, rank, size)}
            loaded = pairs.window(wanted) if hasattr(pairs, "window") else {i: pairs[i] for i in wanted}
        mine = [loaded[i] for i in local_slice(index, rank, size)]
        draw = step + 1  # both samples of a pair, and the reference, on the same new draws
        chosen = [replace(w, draw=draw, keep_prompt=True) for w, _ in mine]
        rejected = [replace(l, draw=draw, keep_prompt=True) for _, l in mine]
        network.train()
        loss, margin_sum, right = step_loss(chosen, rejected, size / len(index))
        skipped = guarded_step(loss, optimizer, params, config.grad_clip)
        schedule.step()
        network.eval()
        n = len(index)
        stats.append(PreferenceStats(global_sum(float(loss.detach()) / size), global_sum(float(margin_sum)) / n,
                                     global_sum(float(right)) / n, skipped))
        if on_step is not None:
            on_step(step, stats[-1])
    return stats
