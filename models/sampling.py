"""Token samplers kept apart from the networks: masks, temperature, nucleus, entropy.

Every function works on a batch of next-token logits (B, V) and per-row settings, so one
decoding step serves rows with different temperatures and top-p values (the Solver's
sampler ladder) in a single forward pass.
"""

from __future__ import annotations

import torch


def full_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of softmax(logits) over the full vocabulary, per row.

    >>> round(float(full_entropy(torch.zeros(1, 4))[0]), 4)  # uniform over 4 tokens: ln 4
    1.3863
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def sample_next(logits: torch.Tensor, allowed: torch.Tensor, temperature: torch.Tensor,
                top_p: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Pick one token per row among `allowed` (bool mask over the vocabulary).

    Rows with temperature 0 take the argmax; the others sample from the tempered,
    nucleus-truncated distribution.
    """
    masked = logits.float().masked_fill(~allowed, float("-inf"))
    greedy = masked.argmax(-1)
    temp = temperature.clamp(min=1e-4).unsqueeze(-1)
    probs = torch.softmax(masked / temp, dim=-1)
    probs = _nucleus(probs, top_p)
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
