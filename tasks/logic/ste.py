"""Solver Token Entropy (STE): a continuous difficulty signal (METHOD.md, Understanding step 2).

Raw STE u aggregates the full-vocabulary entropies of the first answer tokens (max by
default); difficulty d_STE is u's percentile rank among the last `window` raw values
(values <= 1e-6 excluded), with a sigmoid cold start while fewer than `min_history`
values exist.

    >>> raw_ste([0.5, 1.25, 0.75])
    1.25
    >>> ste_percentile(1.0, [0.5, 1.5] * 4)
    0.5
"""

from __future__ import annotations

import math
from collections.abc import Sequence

STE_WINDOW = 128
STE_MIN_HISTORY = 8
STE_EPSILON = 1e-6


def raw_ste(token_entropies: Sequence[float], tokens: int = 5, aggregate: str = "max") -> float:
    """u from the first `tokens` entropies; aggregate "max" (default) or "mean" (ablation)."""
    head = list(token_entropies)[:tokens]
    if not head:
        return 0.0
    if aggregate == "max":
        return max(head)
    if aggregate == "mean":
        return sum(head) / len(head)
    raise ValueError(f"unknown STE aggregate {aggregate!r}; use 'max' or 'mean'")


def cold_start(u: float) -> float:
    """d_STE = sigmoid(1.5 (u - 2.0)) while the history is short."""
    return 1.0 / (1.0 + math.exp(-1.5 * (u - 2.0)))


def ste_percentile(u: float, history: Sequence[float], window: int = STE_WINDOW,
                   min_history: int = STE_MIN_HISTORY) -> float:
    """Percentile rank of u among the last `window` values of history (ties count half)."""
    recent = [h for h in list(history)[-window:] if h > STE_EPSILON]
    if len(recent) < min_history:
        return cold_start(u)
    below = sum(1 for h in recent if h < u)
    equal = sum(1 for h in recent if h == u)
    return (below + 0.5 * equal) / len(recent)


def ste_difficulties(values: Sequence[float], history: Sequence[float], window: int = STE_WINDOW,
                     min_history: int = STE_MIN_HISTORY) -> list[float]:
    """d_STE of each value in order, each one joining the rolling window after it is scored."""
    rolling = list(history)[-window:]
    out = []
    for u in values:
        out.append(ste_percentile(u, rolling, window, min_history))
        rolling = (rolling + [u])[-window:]
    return out
