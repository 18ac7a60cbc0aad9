"""Data-parallel role updates under torch.distributed (gloo on CPU, NCCL on GPUs).

Launched by `torchrun` (see tasks/finetune_ranks.py): every rank holds the whole backbone, draws
the same global batch, computes the loss on its own contiguous slice and lets
`DistributedDataParallel` average the gradients of the role's adapter, so every rank takes the same
optimizer step. Each rank's loss is its slice's sum scaled by world_size / global batch, which makes
the averaged gradient exactly the gradient of the global batch mean (slices may differ in size).
Without an initialised process group everything here is the single-process identity.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) when torch.distributed is not initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def local_slice(batch: Sequence, rank: int, world_size: int) -> list:
    """This rank's contiguous share of a global batch (sizes differ by at most one).

    >>> [local_slice(list(range(5)), r, 2) for r in range(2)]
    [[0, 1, 2], [3, 4]]
    """
    base, extra = divmod(len(batch), world_size)
    start = rank * base + min(rank, extra)
    return list(batch[start:start + base + (1 if rank < extra else 0)])


class _RoleLoss(nn.Module):
    """Holds the backbone's network so DDP sees its parameters; forward computes a role's loss."""

    def __init__(self, network: nn.Module, loss: Callable):
        super().__init__()
        self.network = network
        self.loss = loss

    def forward(self, *args):
        return self.loss(*args)


def role_loss_module(network: nn.Module, trainable: list[nn.Parameter], loss: Callable) -> Callable:
    """`loss` itself in one process; a DDP module that averages the gradients of `trainable` across ranks
    otherwise (the frozen base and other roles' adapters are ignored: nothing else is synchronised)."""
    if world()[1] == 1:
        return loss
    module = _RoleLoss(network, loss)
    keep = {id(p) for p in trainable}
    ignored = [f"network.{n}" for n, p in network.named_parameters() if id(p) not in keep]
    ignored += [f"network.{n}" for n, _ in network.named_buffers()]
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, ignored)
    # The initial broadcast covers only the role's adapter (the base is ignored, never sent): every rank
    # starts from rank 0's adapter even if a backbone initialised its adapters differently per process.
    return nn.parallel.DistributedDataParallel(module, find_unused_parameters=True)


def global_sum(value: float) -> float:
    """Sum of a scalar over ranks (the value itself in one process)."""
    if world()[1] == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(tensor)
    return float(tensor[0])


def guarded_step(loss, optimizer, params, grad_clip: float) -> bool:
    """One clipped optimizer step on `loss`, unless the loss is NaN or infinite on any rank (then every rank keeps
    its weights); returns whether the step was skipped."""
    skipped = any_rank(not bool(torch.isfinite(loss)))
    if not skipped:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
    return skipped


def any_rank(flag: bool) -> bool:
    """True when the flag is set on any rank (keeps a skipped step skipped everywhere)."""
    return global_sum(1.0 if flag else 0.0) > 0
