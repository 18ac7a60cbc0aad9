"""Difficulty buckets and Solver gating (METHOD.md, Understanding step 6).

easy if H_SC <= theta_easy or m >= 0.85; unsolvable if m <= 0.2; hard if H_SC >= 0.9 and
M <= 0.35; else medium. theta_easy adapts: clip(Q1 + 0.25 IQR, 0.10, 1.2) over the last
256 answer entropies, 0.15 until 32 exist.

    >>> bucket(0.0, 1.0, 1.0, theta_easy=0.15)
    'easy'
    >>> bucket(1.1, 0.43, 0.14, theta_easy=0.15)
    'hard'
"""

from __future__ import annotations

from collections.abc import Sequence

EASY_FRACTION = 0.85
UNSOLVABLE_FRACTION = 0.2
HARD_ENTROPY = 0.9
HARD_MARGIN = 0.35
THETA_DEFAULT = 0.15
THETA_WINDOW = 256
THETA_MIN_HISTORY = 32
SOLVER_BUCKETS = ("medium", "hard")


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of sorted values."""
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def easy_threshold(history: Sequence[float]) -> float:
    """Adaptive theta_easy from the last 256 answer entropies.

    >>> easy_threshold([0.0] * 10)
    0.15
    >>> round(easy_threshold([0.0, 0.4, 0.8, 1.2] * 8), 3)  # Q1 0.3, Q3 0.9
    0.45
    """
    recent = sorted(list(history)[-THETA_WINDOW:])
    if len(recent) < THETA_MIN_HISTORY:
        return THETA_DEFAULT
    q1, q3 = _quantile(recent, 0.25), _quantile(recent, 0.75)
    return min(1.2, max(0.10, q1 + 0.25 * (q3 - q1)))


def bucket(entropy: float, fraction: float, margin: float, theta_easy: float) -> str:
    if fraction <= UNSOLVABLE_FRACTION:
        return "unsolvable"
    if entropy <= theta_easy or fraction >= EASY_FRACTION:
        return "easy"
    if entropy >= HARD_ENTROPY and margin <= HARD_MARGIN:
        return "hard"
    return "medium"


def assign_buckets(votes: Sequence[tuple[float, float, float]], history: Sequence[float]) -> list[tuple[str, float]]:
    """(bucket, theta_easy) per (H_SC, m, M), the threshold history growing as items are seen."""
    rolling = list(history)[-THETA_WINDOW:]
    out = []
    for entropy, fraction, margin in votes:
        theta = easy_threshold(rolling)
        out.append((bucket(entropy, fraction, margin, theta), theta))
        rolling = (rolling + [entropy])[-THETA_WINDOW:]
    return out
