"""Policy-gradient updates of one role's adapter on stored rollouts (METHOD.md, Updates).

Data-parallel under torch.distributed like models/training.py: every rank draws the same global
batch indices and trains on its slice; statistics are those of the global batch.

Each example carries its advantage in `weight`. Log-likelihoods are mean target-token
log-probabilities from `Backbone.example_nll`; the reference is the base with adapters off.

- "reinforce" (Solver): L = A * CE + beta * KL, KL the non-negative k3 estimate against the base;
  beta adapts every step through `update_beta(beta, kl)`.
- "clipped" (Proposer against the base, Generator GRPO against the rollout policy):
  L = -min(rho A, clip(rho, 1 - eps, 1 + eps) A) + beta * KL-term, rho = pi / pi_old (`ratio_to`
  "rollout") or pi / pi_base ("base"); the Proposer's KL-term is max(0, logp_pi - logp_ref).

A step whose loss is NaN or infinite is skipped: the adapter keeps its previous weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch

from models.data_parallel import global_sum, guarded_step, local_slice, role_loss_module, world
from models.protocol import Backbone, TrainingExample


@dataclass(frozen=True)
class PolicyConfig:
    steps: int = 100
    lr: float = 1e-3
    objective: Literal["reinforce", "clipped"] = "reinforce"
    ratio_to: Literal["base", "rollout"] = "base"
    kl_term: Literal["k3", "positive_gap"] = "k3"
    clip_eps: float = 0.2
    beta: float = 0.01
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    cache_reference: bool = True  # score each example under the reference once, not once per draw


@dataclass
class StepStats:
    loss: float
    policy_loss: float
    kl: float
    beta: float
    mean_advantage: float
    skipped: bool


def _kl(new_nll: torch.Tensor, ref_nll: torch.Tensor, kind: str) -> torch.Tensor:
    log_ratio = new_nll - ref_nll  # log pi_ref - log pi (per example, mean over tokens)
    if kind == "k3":
        return torch.exp(log_ratio) - 1 - log_ratio
    return torch.clamp(-log_ratio, min=0)  # max(0, logp_pi - logp_ref)


def _rollout_nll(backbone: Backbone, role: str | None, examples: list[TrainingExample],
                 chunk: int = 256) -> torch.Tensor:
    """NLL of every example under the role's adapter before the update (the rollout policy), or under the
    reference (role None)."""
    with torch.no_grad():
        return torch.cat([backbone.example_nll(role, examples[i:i + chunk]) for i in range(0, len(examples), chunk)])


def policy_update(backbone: Backbone, role: str, examples: list[TrainingExample], batch_size: int,
                  config: PolicyConfig, update_beta: Callable[[float, float], float] = lambda beta, kl: beta,
                  on_step: Callable[[int, StepStats], None] | None = None) -> list[StepStats]:
    """`config.steps` updates on batches sampled (seeded) from `examples`; returns per-step statistics."""
    if not examples:
        return []
    torch.manual_seed(config.seed)  # LoRA dropout draws from the global generator
    generator = torch.Generator().manual_seed(config.seed)
    params = backbone.trainable_parameters(role)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    old_nll = _rollout_nll(backbone, role, examples) if config.ratio_to == "rollout" else None
    # The reference (base, adapters off) never changes during the update: score every example once when
    # the steps would otherwise score more examples than there are (the largest saving of the stage).
    cached = config.cache_reference and config.steps * batch_size > len(examples)
    ref_all = _rollout_nll(backbone, None, examples) if cached else None
    beta = config.beta
    stats: list[StepStats] = []
    network = backbone.network
    rank, size = world()

    def local_loss(batch, advantages, ref_nll, old, scale, beta):
        new_nll = backbone.example_nll(role, batch)
        kl = _kl(new_nll, ref_nll, config.kl_term)
        if config.objective == "reinforce":
            policy = advantages * new_nll
        else:
            anchor = old if config.ratio_to == "rollout" else ref_nll
            ratio = torch.exp(anchor - new_nll)
            clipped = torch.clamp(ratio, 1 - config.clip_eps, 1 + config.clip_eps)
            policy = -torch.minimum(ratio * advantages, clipped * advantages)
        return (policy + beta * kl).sum() * scale, policy.detach().sum(), kl.detach().sum()

    step_loss = role_loss_module(network, params, local_loss)
    for step in range(config.steps):
        index = torch.randint(len(examples), (min(batch_size, len(examples)),), generator=generator)
        if len(index) < size:
            raise ValueError(f"a batch of {len(index)} examples cannot be split over {size} ranks")
        mine = local_slice(index.tolist(), rank, size)
        batch = [examples[i] for i in mine]
        advantages = torch.tensor([ex.weight for ex in batch], dtype=torch.float32)
        if ref_all is not None:
            ref_nll = ref_all[mine]
        else:
            with torch.no_grad():
                ref_nll = backbone.example_nll(None, batch)
        old = old_nll[mine] if old_nll is not None else None
        network.train()
        loss, policy_sum, kl_sum = step_loss(batch, advantages, ref_nll, old, size / len(index), beta)
        skipped = guarded_step(loss, optimizer, params, config.grad_clip)
        network.eval()
        n = len(index)
        mean_kl = global_sum(float(kl_sum)) / n
        stats.append(StepStats(global_sum(float(loss.detach()) / size), global_sum(float(policy_sum)) / n, mean_kl,
                               beta, global_sum(float(advantages.sum())) / n, skipped))
        if not skipped:
            beta = update_beta(beta, mean_kl)
        if on_step is not None:
            on_step(step, stats[-1])
    return stats
