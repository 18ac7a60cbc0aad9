"""Token samplers kept apart from the networks: masks, temperature, nucleus, entropy.

Every function works on a batch of next-token logits (B, V) and per-row settings, so one
decoding step serves rows with different temperatures and top-p values (the Solver's
sampler ladder) in a single forward pass.

Randomness comes either from one `torch.Generator` per call, or from **per-row seeds**: a
counter-based draw (splitmix64 of row seed, step and token) used in Gumbel-max sampling. With
per-row seeds a row's tokens depend only on its own seed and logits, not on which other rows share
its batch, so a stage split into shards over any number of workers draws exactly what one process
draws (see tasks/logic/shards.py).
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch

MASK63 = (1 << 63) - 1
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)  # splitmix64 constants as signed int64
_MIX1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MIX2 = 0x94D049BB133111EB - (1 << 64)

Seeds = int | Sequence[int]


def row_seeds(seed: Seeds, n_items: int, per_item: int = 1) -> list[int] | None:
    """One seed per output row when `seed` is a per-item list (row = item x per_item), else None.

    >>> row_seeds([5, 9], 2, per_item=2) == [5 * 1000003 % MASK63, (5 * 1000003 + 1) % MASK63,
    ...                                      9 * 1000003 % MASK63, (9 * 1000003 + 1) % MASK63]
    True
    >>> row_seeds(7, 3) is None
    True
    """
    if isinstance(seed, int):
        return None
    seeds = list(seed)
    if len(seeds) != n_items:
        raise ValueError(f"got {len(seeds)} per-item seeds for {n_items} items")
    return [(int(s) * 1000003 + k) & MASK63 for s in seeds for k in range(per_item)]


def call_seed(seed: Seeds) -> int:
    """A single seed for backbones that can only seed a whole call (per-item lists are folded)."""
    if isinstance(seed, int):
        return seed
    digest = hashlib.sha256(",".join(str(int(s)) for s in seed).encode()).digest()
    return int.from_bytes(digest[:8], "little") & MASK63


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch shifts arithmetically)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def _splitmix(x: torch.Tensor) -> torch.Tensor:
    z = x + _GOLDEN
    z = (z ^ _shr(z, 30)) * _MIX1
    z = (z ^ _shr(z, 27)) * _MIX2
    return z ^ _shr(z, 31)


def keyed_uniform(keys: torch.Tensor, step: int, width: int) -> torch.Tensor:
    """Uniforms in (0, 1) of shape (B, width), a pure function of (row key, step, column)."""
    base = _splitmix(keys.long() ^ (step * 0x632BE59BD9B4E019 & MASK63))
    z = _splitmix(base.unsqueeze(-1) + torch.arange(width, dtype=torch.long))
    return (_shr(z, 11).double() + 0.5) / float(1 << 53)


def full_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of softmax(logits) over the full vocabulary, per row.

    >>> round(float(full_entropy(torch.zeros(1, 4))[0]), 4)  # uniform over 4 tokens: ln 4
    1.3863
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def sample_next(logits: torch.Tensor, allowed: torch.Tensor, temperature: torch.Tensor,
                top_p: torch.Tensor, generator: torch.Generator | None = None,
                keys: torch.Tensor | None = None, step: int = 0) -> torch.Tensor:
    """Pick one token per row among `allowed` (bool mask over the vocabulary).

    Rows with temperature 0 take the argmax; the others sample from the tempered,
    nucleus-truncated distribution, with `generator` (one stream for the batch) or with
    `keys` (one seed per row; Gumbel-max over `keyed_uniform(keys, step)`).
    """
    masked = logits.float().masked_fill(~allowed, float("-inf"))
    greedy = masked.argmax(-1)
    temp = temperature.clamp(min=1e-4).unsqueeze(-1)
    probs = torch.softmax(masked / temp, dim=-1)
    probs = _nucleus(probs, top_p)
    if keys is not None:
        gumbel = -torch.log(-torch.log(keyed_uniform(keys, step, probs.shape[-1])))
        drawn = (probs.double().log() + gumbel).argmax(-1)
    else:
        drawn = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return torch.where(temperature <= 0, greedy, drawn)


def _nucleus(probs: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Keep the smallest set of tokens whose mass reaches top_p (always the top token)."""
    sorted_p, order = probs.sort(dim=-1, descending=True)
    before = sorted_p.cumsum(-1) - sorted_p
    keep_sorted = before < top_p.unsqueeze(-1)
    keep_sorted[:, 0] = True
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    kept = probs * keep
    return kept / kept.sum(-1, keepdim=True)
