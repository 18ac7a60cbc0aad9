"""Baselines, advantages and the adaptive KL coefficient of the three role updates (METHOD.md, Updates).

    >>> ema_baseline(0.0, 1.0)
    0.4
    >>> max_normalized([0.5, -0.25, 0.0])
    [1.0, -0.5, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

EMA_KEEP = 0.6
BETA_INIT = 0.01
KL_TARGET = 0.02
BETA_RATE = 0.1
BETA_RANGE = (1e-3, 100.0)


def ema_baseline(baseline: float, reward: float, keep: float = EMA_KEEP) -> float:
    """b <- 0.6 b + 0.4 r."""
    return keep * baseline + (1 - keep) * reward


def ema_advantages(rewards: Sequence[float], baseline: float, keep: float = EMA_KEEP) -> tuple[list[float], float]:
    """Advantages r_i - b with the baseline updated after each sample; returns them and the final b."""
    out = []
    for r in rewards:
        out.append(r - baseline)
        baseline = ema_baseline(baseline, r, keep)
    return out, baseline


def adaptive_beta(beta: float, kl: float, target: float = KL_TARGET, rate: float = BETA_RATE) -> float:
    """beta <- clip(beta * exp(0.1 (KL - 0.02) / 0.02), 1e-3, 100).

    >>> round(adaptive_beta(0.01, 0.04), 6)   # KL at twice the target: beta grows by e^0.1
    0.011052
    """
    if not math.isfinite(kl):
        return beta
    return min(BETA_RANGE[1], max(BETA_RANGE[0], beta * math.exp(rate * (kl - target) / target)))


def max_normalized(values: Sequence[float]) -> list[float]:
    """A_j = r_j / max_k |r_k| (zeros when every value is zero)."""
    scale = max((abs(v) for v in values), default=0.0)
    return [0.0 if scale == 0 else v / scale for v in values]


def bucket_shifted(rewards: Sequence[float], buckets: Sequence[str], baselines: dict[str, float],
                   keep: float = EMA_KEEP) -> tuple[list[float], dict[str, float]]:
    """Rewards minus their bucket's EMA baseline, baselines updated in order; returns both."""
    baselines = dict(baselines)
    out = []
    for r, b in zip(rewards, buckets):
        base = baselines.get(b, 0.0)
        out.append(r - base)
        baselines[b] = ema_baseline(base, r, keep)
    return out, baselines
