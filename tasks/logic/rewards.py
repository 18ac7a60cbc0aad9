"""Solver and Proposer rewards from self-consistency (METHOD.md, Understanding step 7).

    >>> round(informativeness(0.675, 0.0), 3)   # g peaks at H_SC = 0.675; margin 0 adds 0.5
    1.0
    >>> solver_reward(is_majority=False, s=0.8)
    -0.2
"""

from __future__ import annotations

import math

G_CENTER = 0.675
G_WIDTH = 0.525
MARGIN_SCALE = 0.9
WRONG_PENALTY = 0.25
PROB_EXPONENT = 0.7
VERBOSITY_FREE_WORDS = 6
PROPOSER_STE_WEIGHT = 0.7
PROPOSER_EASY_CAP = 0.2


def _clip(x: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, x))


def g(entropy: float) -> float:
    """g(H) = exp(-(H - 0.675)^2 / (2 * 0.525^2))."""
    return math.exp(-((entropy - G_CENTER) ** 2) / (2 * G_WIDTH ** 2))


def informativeness(entropy: float, margin: float) -> float:
    """s = clip(0.5 g(H_SC) + 0.5 max(0, 1 - M / 0.9), 0, 1)."""
    return _clip(0.5 * g(entropy) + 0.5 * max(0.0, 1 - margin / MARGIN_SCALE), 0.0, 1.0)


def solver_reward(is_majority: bool, s: float) -> float:
    """r_i = s if a_i = a* else -0.25 s."""
    return s if is_majority else -WRONG_PENALTY * s


def verbosity_penalty(words_before_answer: int) -> float:
    """pen_i = clip((w_i - 6) / 6, 0, 1)."""
    return _clip((words_before_answer - VERBOSITY_FREE_WORDS) / VERBOSITY_FREE_WORDS, 0.0, 1.0)


def shaped_solver_reward(reward: float, answer_share: float, words_before_answer: int) -> float:
    """r~_i = p(a_i)^0.7 * (1 - 0.1 pen_i) * r_i."""
    return answer_share ** PROB_EXPONENT * (1 - 0.1 * verbosity_penalty(words_before_answer)) * reward


def proposer_reward(d_ste: float, entropy: float, s: float, easy: bool) -> float:
    """R_P = 0.7 d_STE + 0.3 1[H_SC > 0] clip(0.9 (2s - 1) + 0.1 exp(-(H_SC - 0.9)^2 / 0.125), -1, 1).

    Capped at 0.2 when the question is easy or collapsed; clipped to [-1, 1].
    """
    consistency = 0.0
    if entropy > 0:
        consistency = _clip(0.9 * (2 * s - 1) + 0.1 * math.exp(-((entropy - 0.9) ** 2) / (2 * 0.25 ** 2)), -1, 1)
    reward = PROPOSER_STE_WEIGHT * d_ste + (1 - PROPOSER_STE_WEIGHT) * consistency
    if easy:
        reward = min(reward, PROPOSER_EASY_CAP)
    return _clip(reward, -1.0, 1.0)
