"""Which self-generated items become training examples, and why (every decision has a reason).

Solver: questions in the medium/hard buckets (METHOD.md gating; easy and unsolvable items
teach nothing), weighted by the majority fraction; plus the checks of generated images the
Solver accepted (their expected answers come from the spec, verified by the Solver).
Proposer: selected questions that are not unsolvable, weighted by their STE difficulty;
specs whose images were accepted, weighted by their best reward.
Generator: the best image of each spec when its reward reaches `accept_reward`.

    >>> question_decision({"well_formed": True, "bucket": "easy", "majority_fraction": 1.0})
    (False, 'easy')
    >>> question_decision({"well_formed": True, "bucket": "medium", "majority_fraction": 0.57})
    (True, 'medium')
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.logic.buckets import SOLVER_BUCKETS


@dataclass(frozen=True)
class FilterPolicy:
    min_majority_fraction: float = 0.4  # below this a medium/hard label is too noisy to imitate
    accept_reward: float = 0.7  # R_g at which a generated image counts as accepted
    min_q_spec: float = 0.35  # METHOD.md: the generator is updated only if Q_spec >= 0.35


def question_decision(item: dict, policy: FilterPolicy = FilterPolicy()) -> tuple[bool, str]:
    """(kept for the Solver, reason) for a selected question with its vote."""
    if not item["well_formed"]:
        return False, "malformed"
    if item["bucket"] not in SOLVER_BUCKETS:
        return False, item["bucket"]
    if item["majority_fraction"] < policy.min_majority_fraction:
        return False, "low-agreement"
    return True, item["bucket"]


def proposer_weight(item: dict) -> float:
    """The Proposer imitates its own questions in proportion to their STE difficulty."""
    if not item["well_formed"] or item["bucket"] == "unsolvable":
        return 0.0
    return float(item["ste_difficulty"])


def generation_decision(reward: float, is_best_of_spec: bool, q_spec: float,
                        policy: FilterPolicy = FilterPolicy()) -> tuple[bool, str]:
    if q_spec < policy.min_q_spec:
        return False, "weak-spec"
    if reward < policy.accept_reward:
        return False, "low-reward"
    if not is_best_of_spec:
        return False, "not-best-of-group"
    return True, "accepted"
