"""The promotion gate: does a round's checkpoint replace the champion?

Scores are validation-split metrics (never the reported eval split). The gate score is the mean of
`PROMOTION_METRICS` (understanding and generation count equally); the candidate is promoted only
when it beats the champion by at least `margin`, so a regression or noise never becomes the base
of the next round.

    >>> promotion_decision({"vqa_accuracy": 0.76, "geneval_overall": 0.80},
    ...                    {"vqa_accuracy": 0.74, "geneval_overall": 0.80}, margin=0.005)
    PromotionDecision(promote=True, candidate_score=0.78, champion_score=0.77, margin=0.005, reason='gain 0.0100 >= margin 0.0050')
"""

from __future__ import annotations

from dataclasses import dataclass

PROMOTION_METRICS: tuple[str, ...] = ("vqa_accuracy", "geneval_overall")


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    candidate_score: float
    champion_score: float
    margin: float
    reason: str


def gate_score(metrics: dict[str, float], keys: tuple[str, ...] = PROMOTION_METRICS) -> float:
    missing = [k for k in keys if k not in metrics]
    if missing:
        raise ValueError(f"promotion gate needs validation metrics {', '.join(missing)}")
    return round(sum(float(metrics[k]) for k in keys) / len(keys), 10)


def promotion_decision(candidate: dict[str, float], champion: dict[str, float], margin: float,
                       keys: tuple[str, ...] = PROMOTION_METRICS) -> PromotionDecision:
    if margin < 0:
        raise ValueError(f"promotion margin must be >= 0, got {margin}")
    cand, champ = gate_score(candidate, keys), gate_score(champion, keys)
    gain = cand - champ
    if gain >= margin - 1e-12:
        return PromotionDecision(True, cand, champ, margin, f"gain {gain:.4f} >= margin {margin:.4f}")
    return PromotionDecision(False, cand, champ, margin, f"gain {gain:.4f} < margin {margin:.4f}")
