"""Scores of a generated image from the Solver's own judgement (METHOD.md, Generation step 4).

    >>> round(generation_reward(q_spec=1.0, fidelity=1.0, cycle=0.5, diversity=0.2, contradiction=0.0), 4)
    0.8105
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tasks.logic.soft_match import soft_match
from tasks.logic.voting import vote


def check_fidelity(answers: Sequence[str], expected: str) -> float:
    """0.7 soft_match(majority, expected) + 0.3 majority fraction for one check."""
    v = vote(list(answers))
    return 0.7 * soft_match(v.majority, expected) + 0.3 * v.fraction


def contradicts(answers: Sequence[str], expected: str) -> bool:
    """A yes/no check whose majority answer flips the expected polarity."""
    if expected not in ("yes", "no"):
        return False
    majority = vote(list(answers)).majority
    return majority in ("yes", "no") and majority != expected


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / denom) if denom > 0 else 0.0


def cycle_consistency(prompt_emb: np.ndarray, caption_emb: np.ndarray, image_emb: np.ndarray) -> float:
    """S_cyc = clip(0.5 cos(e(prompt), e(caption)) + 0.5 cos(e_mm(image), e(prompt)), 0, 1)."""
    return min(1.0, max(0.0, 0.5 * cosine(prompt_emb, caption_emb) + 0.5 * cosine(image_emb, prompt_emb)))


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised mean absolute pixel difference in [0, 1]."""
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean() / 255.0)


def set_diversity(images: Sequence[np.ndarray]) -> float:
    """Mean pairwise pixel distance of a set of images (0 for fewer than 2)."""
    pairs = [_distance(images[i], images[j]) for i in range(len(images)) for j in range(i + 1, len(images))]
    return float(np.mean(pairs)) if pairs else 0.0


def leave_one_out_diversity(images: Sequence[np.ndarray]) -> list[float]:
    """S_div per image: its share of the set's pairwise diversity, the mean distance to the others.

    The set diversity is the mean of these shares, so an image that duplicates another
    contributes less than one that differs from all.
    """
    n = len(images)
    if n < 2:
        return [0.0] * n
    return [float(np.mean([_distance(images[i], images[j]) for j in range(n) if j != i])) for i in range(n)]


def generation_reward(q_spec: float, fidelity: float, cycle: float, diversity: float, contradiction: float,
                      use_fidelity: bool = True, use_cycle: bool = True) -> float:
    """R_g = Q_spec * clip(0.684 S_fid + 0.211 S_cyc + 0.105 S_div - 0.2 C, 0, 1).

    The ablations drop a term: QA fidelity off removes S_fid and C, cycle consistency off removes S_cyc.
    """
    inner = 0.105 * diversity
    if use_fidelity:
        inner += 0.684 * fidelity - 0.2 * contradiction
    if use_cycle:
        inner += 0.211 * cycle
    return q_spec * min(1.0, max(0.0, inner))


def group_zscores(values: Sequence[float]) -> list[float]:
    """Group-relative advantages: (v - mean) / std, zeros when the group has no spread."""
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return [0.0 if std < 1e-8 else (v - mean) / std for v in values]
