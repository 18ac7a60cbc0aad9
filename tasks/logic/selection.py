"""Which images a round uses, which candidate question it solves, and which items it keeps.

    >>> pick_candidate([(0.9, True, 0.5), (1.2, False, 0.9), (0.4, True, 0.2)])
    0
    >>> selected_candidates([0.9, 1.2, 0.4, 0.1], [True, False, True, False], [0.5, 0.9, 0.2, 0.1], 2, True)
    [True, False, True, False]
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def round_sample(image_ids: Sequence[str], n: int, round_idx: int, seed: int) -> list[str]:
    """A deterministic, round-dependent subset of n image ids (all of them when n >= len)."""
    key = lambda i: hashlib.sha1(f"{seed}:{round_idx}:{i}".encode()).hexdigest()  # noqa: E731
    return sorted(sorted(image_ids), key=key)[:n]


def pick_candidate(candidates: Sequence[tuple[float, bool, float]], easy_cutoff: float = 0.2) -> int | None:
    """Index of the best candidate given (raw STE u, well-formed, d_STE) per candidate.

    Prefers well-formed, non-easy (d_STE above `easy_cutoff`) candidates with the highest u;
    falls back to the best well-formed one; None when no candidate is well formed.
    """
    formed = [i for i, (_, ok, _) in enumerate(candidates) if ok]
    if not formed:
        return None
    hard_enough = [i for i in formed if candidates[i][2] > easy_cutoff]
    pool = hard_enough or formed
    return max(pool, key=lambda i: (candidates[i][0], -i))


def selected_candidates(us: Sequence[float], well_formed: Sequence[bool], difficulties: Sequence[float],
                        n_candidates: int, use_ste: bool = True) -> list[bool]:
    """Which candidates are solved: one per image, the candidates listed image by image in groups of
    `n_candidates`. `use_ste` False (the "STE off" ablation) picks each image's first well-formed candidate."""
    n = len(us)
    selected = [False] * n
    for start in range(0, n, n_candidates):
        group = range(start, min(n, start + n_candidates))
        scored = [(us[i] if use_ste else -k, well_formed[i], difficulties[i]) for k, i in enumerate(group)]
        best = pick_candidate(scored)
        if best is not None:
            selected[start + best] = True
    return selected
