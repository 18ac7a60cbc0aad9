"""Self-consistency voting over the Solver's N answers (METHOD.md, Solve step 5).

    >>> v = vote(["red", "red", "blue"])
    >>> v.majority, round(v.fraction, 3), round(v.entropy, 3), round(v.margin, 3)
    ('red', 0.667, 0.637, 0.333)
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Vote:
    majority: str
    fraction: float  # m: share of answers equal to the majority
    entropy: float  # H_SC = -sum_a p_a ln p_a over distinct answers
    margin: float  # M = p(1) - p(2)
    distribution: dict[str, float]


def vote(answers: list[str]) -> Vote:
    """Majority answer, majority fraction, answer entropy and margin of normalised answers.

    Ties go to the answer seen first, so the result does not depend on hash order.
    """
    if not answers:
        raise ValueError("vote() needs at least one answer")
    counts = Counter(answers)
    first_seen = {a: i for i, a in reversed(list(enumerate(answers)))}
    ranked = sorted(counts, key=lambda a: (-counts[a], first_seen[a]))
    n = len(answers)
    probs = {a: counts[a] / n for a in ranked}
    top = probs[ranked[0]]
    second = probs[ranked[1]] if len(ranked) > 1 else 0.0
    entropy = -sum(p * math.log(p) for p in probs.values())
    return Vote(ranked[0], top, entropy + 0.0, top - second, probs)
