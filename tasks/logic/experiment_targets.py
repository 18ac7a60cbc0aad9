"""The evidence issue's targets, checked against an experiment's results (plain dicts, no I/O).

`results` rows are {"arm", "seed", "round", "metrics", "diagnostics"} as `asg experiment` collects them
(round 0 is the base). Gains are in points (x100) at the last round, averaged over seeds.

    >>> rows = [{"arm": a, "seed": 0, "round": r, "metrics": {"vqa_accuracy": v, "geneval_overall": v}}
    ...         for a, r, v in [("control", 0, .70), ("control", 1, .72), ("paper", 0, .70), ("paper", 1, .76)]]
    >>> [(t.claim, round(t.measured, 1), t.met) for t in target_checks(rows)][:2]
    [('VQA gain over the base (points)', 6.0, True), ('VQA gain over the matched control (points)', 4.0, True)]
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from tasks.logic.presets import CEILING_PRESETS

EVOLVING_ARMS = ("paper", "verified", "agreement", "compose")  # label-free presets; never a gold-label ceiling
GOLD_ARMS = CEILING_PRESETS  # gold-ceiling (the Proposer's items), compose-gold-ceiling (compose's own items)


@dataclass(frozen=True)
class TargetCheck:
    claim: str
    measured: float
    target: float
    met: bool
    detail: str = ""

    @property
    def gap(self) -> float:
        """How far short of the target (0 when met)."""
        return 0.0 if self.met else self.target - self.measured


def _mean(results: list[dict], arm: str, round_idx: int, key: str, field: str = "metrics") -> float | None:
    values = [r.get(field, {}).get(key) for r in results if r["arm"] == arm and r["round"] == round_idx]
    values = [v for v in values if v is not None and v == v]
    return statistics.mean(values) if values else None


def target_checks(results: list[dict]) -> list[TargetCheck]:
    last = max(r["round"] for r in results)
    checks: list[TargetCheck] = []
    for metric, name in (("vqa_accuracy", "VQA"), ("geneval_overall", "GenEval-2D")):
        scores = {arm: _mean(results, arm, last, metric) for arm in EVOLVING_ARMS}
        scores = {a: v for a, v in scores.items() if v is not None}
        base = _mean(results, "control", 0, metric)
        control = _mean(results, "control", last, metric)
        if not scores or base is None:
            continue
        best = max(scores, key=scores.get)
        gain = 100 * (scores[best] - base)
        checks.append(TargetCheck(f"{name} gain over the base (points)", gain, 5.0, gain >= 5.0, f"best arm {best}"))
        if control is not None:
            over = 100 * (scores[best] - control)
            checks.append(TargetCheck(f"{name} gain over the matched control (points)", over, 4.0, over >= 4.0,
                                      f"best arm {best}"))
    for metric, name, target in (("vqa_relation", "relation VQA", 0.65),
                                 ("geneval_color_attr", "GenEval-2D colour attribution", 0.50)):
        checks += _best_arm_check(results, last, metric, "metrics", name, target)
    for metric, name in (("vqa_accuracy", "VQA"), ("geneval_overall", "GenEval-2D")):
        recovered = ceiling_share(results, metric)
        if recovered:
            best = max(recovered, key=recovered.get)
            checks.append(TargetCheck(f"share of the gold-label ceiling recovered, {name}", recovered[best], 0.6,
                                      recovered[best] >= 0.6,
                                      f"best arm {best}, ceiling {highest_ceiling(results, metric)[0]}"))
    for key, claim, target in (("solver_target_accuracy", "label accuracy of the Solver's training targets", 0.85),
                               ("generator_target_accuracy", "Generator's training images truly correct", 0.95)):
        checks += _best_arm_check(results, last, key, "diagnostics", claim, target)
    pairs = [(r["diagnostics"].get("auroc_ste_error"), r["diagnostics"].get("auroc_disagreement_error"))
             for r in results if r["round"] == last and r.get("diagnostics")]
    pairs = [(s, d) for s, d in pairs if s is not None and d is not None and s == s and d == d]
    if pairs:
        wins = sum(s > d for s, d in pairs)
        checks.append(TargetCheck("share of arm-seeds where STE's AUROC beats disagreement's", wins / len(pairs),
                                  1.0, wins == len(pairs), f"{wins} of {len(pairs)}"))
    for claim, arm, other, metric in (
            ("STE helps: paper minus STE-off, VQA (points)", "paper", "paper/ste-off", "vqa_accuracy"),
            ("STE helps: paper minus STE-off, GenEval-2D (points)", "paper", "paper/ste-off", "geneval_overall"),
            ("joint beats understanding-only on VQA (points)", "paper", "paper/understanding-only", "vqa_accuracy"),
            ("joint beats generation-only on GenEval-2D (points)", "paper", "paper/generation-only",
             "geneval_overall")):
        a, b = _mean(results, arm, last, metric), _mean(results, other, last, metric)
        if a is not None and b is not None:
            checks.append(TargetCheck(claim, 100 * (a - b), 0.0, a > b))
    return checks


def _best_arm_check(results: list[dict], last: int, key: str, field: str, claim: str,
                    target: float) -> list[TargetCheck]:
    """The best label-free arm's last-round value of `key` against `target` (none when no arm has it)."""
    values = {arm: _mean(results, arm, last, key, field) for arm in EVOLVING_ARMS}
    values = {a: v for a, v in values.items() if v is not None}
    if not values:
        return []
    best = max(values, key=values.get)
    return [TargetCheck(claim, values[best], target, values[best] >= target, f"best arm {best}")]


def highest_ceiling(results: list[dict], metric: str) -> tuple[str | None, float | None]:
    """The gold-label ceiling arm with the highest last-round `metric` (mean over seeds), and that value: the most
    demanding bound when several ceilings ran.

    >>> rows = [{"arm": a, "seed": 0, "round": 1, "metrics": {"vqa_accuracy": v}}
    ...         for a, v in [("gold-ceiling", .76), ("compose-gold-ceiling", .81)]]
    >>> highest_ceiling(rows, "vqa_accuracy")
    ('compose-gold-ceiling', 0.81)
    """
    last = max(r["round"] for r in results)
    values = {arm: _mean(results, arm, last, metric) for arm in GOLD_ARMS}
    values = {arm: v for arm, v in values.items() if v is not None}
    if not values:
        return None, None
    arm = max(values, key=values.get)
    return arm, values[arm]


def ceiling_share(results: list[dict], metric: str) -> dict[str, float]:
    """Per label-free arm: (arm - control) / (highest gold ceiling - control) at the last round, mean over seeds.

    Empty when no ceiling arm ran or the ceiling does not beat the control (no headroom to share).

    >>> rows = [{"arm": a, "seed": 0, "round": 1, "metrics": {"vqa_accuracy": v}}
    ...         for a, v in [("control", .70), ("gold-ceiling", .80), ("agreement", .76)]]
    >>> round(ceiling_share(rows, "vqa_accuracy")["agreement"], 2)
    0.6
    """
    last = max(r["round"] for r in results)
    gold, control = highest_ceiling(results, metric)[1], _mean(results, "control", last, metric)
    if gold is None or control is None or gold <= control:
        return {}
    out = {}
    for arm in EVOLVING_ARMS:
        value = _mean(results, arm, last, metric)
        if value is not None:
            out[arm] = (value - control) / (gold - control)
    return out


def targets_table(checks: list[TargetCheck]) -> str:
    lines = ["| claim | measured | target | met | short by | note |", "|---|---|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {c.claim} | {c.measured:.3f} | {c.target:g} | {'yes' if c.met else 'no'} | "
                     f"{'' if c.met else f'{c.gap:.3f}'} | {c.detail} |")
    return "\n".join(lines)
