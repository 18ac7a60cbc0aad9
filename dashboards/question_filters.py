"""The Questions view's filters as one LanceDB SQL `where` clause (pure: no I/O).

    >>> question_where(QuestionFilter(round_idx=2, buckets=("medium", "hard"), kept=True, text="left of"))
    "round_idx = 2 AND bucket IN ('medium', 'hard') AND kept = true AND question LIKE '%left of%'"
"""

from __future__ import annotations

from dataclasses import dataclass

STE_BANDS: dict[str, tuple[float, float]] = {"low (< 0.33)": (0.0, 0.33), "middle": (0.33, 0.67),
                                             "high (>= 0.67)": (0.67, 1.01)}


@dataclass(frozen=True)
class QuestionFilter:
    round_idx: int | None = None
    buckets: tuple[str, ...] = ()
    families: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    ste_band: tuple[float, float] = (0.0, 1.01)  # on the STE difficulty percentile
    majority_band: tuple[float, float] = (0.0, 1.0)
    kept: bool | None = None
    text: str = ""


def quote(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(quote(v) for v in values)})"


def question_where(f: QuestionFilter) -> str:
    parts = []
    if f.round_idx is not None:
        parts.append(f"round_idx = {int(f.round_idx)}")
    for column, values in (("bucket", f.buckets), ("family", f.families), ("reason", f.reasons)):
        if values:
            parts.append(_in(column, values))
    if f.ste_band != (0.0, 1.01):
        parts.append(f"ste_difficulty >= {float(f.ste_band[0])} AND ste_difficulty < {float(f.ste_band[1])}")
    if f.majority_band != (0.0, 1.0):
        parts.append(f"majority_fraction >= {float(f.majority_band[0])} AND "
                     f"majority_fraction <= {float(f.majority_band[1])}")
    if f.kept is not None:
        parts.append(f"kept = {'true' if f.kept else 'false'}")
    text = f.text.strip().lower()
    if text:
        escaped = text.replace("'", "''").replace("%", "").replace("_", "")
        parts.append(f"question LIKE '%{escaped}%'")
    return " AND ".join(parts) if parts else "true"
