"""The spec self-alignment gate (METHOD.md, Generation step 2).

The Solver answers a spec's checks on the *source* image; alignment = mean over checks of
0.7 match + 0.3 majority fraction. A spec is accepted with >= 2 checks, Q_spec >= 0.55 and
alignment >= 0.55; otherwise the Proposer retries (at most 2 times) and the best attempt is kept.

    >>> round(alignment([["red", "red", "blue"], ["two", "two", "two"]], ["red", "three"]), 4)
    0.6
"""

from __future__ import annotations

from collections.abc import Sequence

from tasks.logic.soft_match import soft_match
from tasks.logic.voting import vote

MIN_CHECKS = 2
MIN_Q_SPEC = 0.55
MIN_ALIGNMENT = 0.55
MAX_RETRIES = 2


def alignment(answers_per_check: Sequence[Sequence[str]], expected: Sequence[str]) -> float:
    """Mean of 0.7 * 1[majority matches expected] + 0.3 * majority fraction over checks."""
    if not expected:
        return 0.0
    total = 0.0
    for answers, exp in zip(answers_per_check, expected):
        v = vote(list(answers))
        total += 0.7 * (soft_match(v.majority, exp) == 1.0) + 0.3 * v.fraction
    return total / len(expected)


def spec_accepted(n_checks: int, q_spec: float, align: float) -> tuple[bool, str]:
    if n_checks < MIN_CHECKS:
        return False, "too-few-checks"
    if q_spec < MIN_Q_SPEC:
        return False, "low-spec-quality"
    if align < MIN_ALIGNMENT:
        return False, "misaligned-with-source"
    return True, "accepted"


def best_attempt(attempts: Sequence[tuple[bool, float, float]]) -> int:
    """Index of the attempt to keep from (accepted, q_spec, alignment): the first accepted one,
    else the one with the highest q_spec + alignment."""
    for i, (ok, _, _) in enumerate(attempts):
        if ok:
            return i
    return max(range(len(attempts)), key=lambda i: (attempts[i][1] + attempts[i][2], -i))
