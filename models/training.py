"""One weighted-likelihood training loop for pretraining the base and updating a role.

The loss of a batch is mean_i(weight_i * nll_i) where nll_i is the mean target-token
negative log-likelihood of example i; AdamW with linear warm-up and cosine decay to
`min_lr_ratio * lr`, gradient clipping at 1.0.

A long update can be interrupted and continued: `train(..., save_every=k, on_progress=save)` hands `save` a
`TrainProgress` (the step reached, the losses so far, the trainable weights, AdamW's moments and the RNG state)
every k steps, and `train(..., resume=progress)` continues from it, drawing the same batches and dropout masks,
so the weights it ends with are bit for bit those of an uninterrupted run (tests/test_models.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from models.data_parallel import global_sum, local_slice, role_loss_module, world
from models.protocol import Backbone, TrainingExample


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000
    lr: float = 3e-3
    min_lr_ratio: float = 0.01
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0

    def lr_at(self, step: int) -> float:
        """Learning rate at `step` (0-based): linear warm-up, then cosine to min_lr_ratio * lr.

        >>> TrainConfig(steps=100, lr=1.0, warmup_steps=0, min_lr_ratio=0.0).lr_at(50)
        0.5
        """
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        span = max(1, self.steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        floor = self.lr * self.min_lr_ratio
        return floor + (self.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class TrainProgress:
    """Where a `train` run stands after `step` steps: enough to continue it exactly (all tensors, safetensors-ready)."""

    step: int
    losses: list[float]
    tensors: dict[str, torch.Tensor]  # "param.i", "adam.i.exp_avg", "adam.i.exp_avg_sq", "adam.i.step", "rng"

    @classmethod
    def capture(cls, step: int, losses: list[float], params: list[torch.Tensor],
                optimizer: torch.optim.Optimizer) -> "TrainProgress":
        tensors = {f"param.{i}": p.detach().clone() for i, p in enumerate(params)}
        for i, state in optimizer.state_dict()["state"].items():
            for name, value in state.items():
                tensors[f"adam.{i}.{name}"] = torch.as_tensor(value).detach().clone()
        tensors["rng"] = torch.get_rng_state()
        if params and params[0].is_cuda:  # dropout on a GPU draws from its own generator
            tensors["cuda_rng"] = torch.cuda.get_rng_state(params[0].device)
        return cls(step, list(losses), tensors)

    def restore(self, params: list[torch.Tensor], optimizer: torch.optim.Optimizer) -> None:
        if sum(1 for k in self.tensors if k.startswith("param.")) != len(params):
            raise ValueError(f"the saved progress has {sum(1 for k in self.tensors if k.startswith('param.'))} "
                             f"trainable tensors, this role has {len(params)}: it belongs to another model")
        with torch.no_grad():
            for i, p in enumerate(params):
                p.copy_(self.tensors[f"param.{i}"])
        state = optimizer.state_dict()
        moments: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in self.tensors.items():
            if key.startswith("adam."):
                _, i, name = key.split(".", 2)
                moments.setdefault(int(i), {})[name] = value.clone()
        state["state"] = moments
        optimizer.load_state_dict(state)
        torch.set_rng_state(self.tensors["rng"])
        if "cuda_rng" in self.tensors and params and params[0].is_cuda:
            torch.cuda.set_rng_state(self.tensors["cuda_rng"], params[0].device)


def train(backbone: Backbone, role: str | None, batches: Iterator[list[TrainingExample]], config: TrainConfig,
          on_step: Callable[[int, float, float], None] | None = None, resume: TrainProgress | None = None,
          save_every: int = 0, on_progress: Callable[[TrainProgress], None] | None = None) -> list[float]:
    """Run `config.steps` optimizer steps; returns the loss of every step.

    role None trains the whole base (pretraining); a role name trains only its adapter.
    `on_step(step, loss, lr)` is called after each step (progress bars, metric logging).
    With `save_every` > 0, `on_progress(progress)` gets the run's state every that many steps; `resume`
    continues a run from such a state (the first `resume.step` batches are drawn and dropped, so `batches`
    must be the same stream).
    Under torch.distributed every rank draws the same global batch and trains on its slice
    (models/data_parallel.py); the returned losses are those of the global batch.
    """
    torch.manual_seed(config.seed)
    params = [p for p in backbone.trainable_parameters(role)]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    network = backbone.network
    rank, size = world()
    batch_loss = role_loss_module(network, params, lambda batch, weights: (
        weights * backbone.example_nll(role, batch)).sum())
    losses: list[float] = []
    start = 0
    if resume is not None:
        resume.restore(params, optimizer)
        losses, start = list(resume.losses), resume.step
        for _ in range(start):
            next(batches)
    network.train()
    try:
        for step in range(start, config.steps):
            lr = config.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = next(batches)
            if len(batch) < size:
                raise ValueError(f"a batch of {len(batch)} examples cannot be split over {size} ranks")
            local = local_slice(batch, rank, size)
            weights = torch.tensor([ex.weight for ex in local], dtype=torch.float32)
            loss = batch_loss(local, weights) * (size / len(batch))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            losses.append(global_sum(float(loss.detach()) / size))
            if on_step is not None:
                on_step(step, losses[-1], lr)
            if save_every and on_progress is not None and ((step + 1) % save_every == 0 or step + 1 == config.steps):
                on_progress(TrainProgress.capture(step + 1, losses, params, optimizer))
    finally:
        network.eval()
    return losses


def mixture_batches(examples: list[TrainingExample], mix: dict[str, float], batch_size: int,
                    seed: int, groups: dict[str, list[TrainingExample]] | None = None
                    ) -> Iterator[list[TrainingExample]]:
    """Endless batches drawing each example's kind from `mix`, then an example of that kind. `groups` adds
    named groups of examples that `mix` weighs apart from their kinds (e.g. {"relate": [...]})."""
    import random

    rng = random.Random(seed)
    by_kind: dict[str, list[TrainingExample]] = {}
    for ex in examples:
        by_kind.setdefault(ex.kind, []).append(ex)
    for name, members in (groups or {}).items():
        by_kind.setdefault(name, []).extend(members)
    kinds = [k for k in mix if by_kind.get(k)]
    if not kinds:
        raise ValueError(f"no examples of any kind in the mix {sorted(mix)}")
    weights = [mix[k] for k in kinds]
    while True:
        yield [rng.choice(by_kind[k]) for k in rng.choices(kinds, weights=weights, k=batch_size)]
