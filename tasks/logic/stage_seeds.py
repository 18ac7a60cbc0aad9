"""Every random seed a round derives for a stage: one function, so no stage mixes the round index into its
seed by a private formula and two stages never collide by accident of arithmetic.

The offsets are the ones the measured results were produced with (kept so a round reproduces them exactly).

    >>> stage_seed("solve", seed=1, round_idx=2)
    16838
    >>> stage_seed("finetune", seed=0, round_idx=1, role="solver")
    37
"""

from __future__ import annotations

from typing import Callable

_FORMULAS: dict[str, Callable[[int, int, str, int], int]] = {
    # stage: (seed, round_idx, role, attempt) -> call seed
    "propose": lambda s, r, role, a: s * 1000 + r,
    "generate": lambda s, r, role, a: s * 1000 + r + 31,  # then one seed per spec: shards.item_seed
    "generate-spec": lambda s, r, role, a: s * 1000 + r * 101 + a * 17 + 3,  # the spec pass, per retry attempt
    "score": lambda s, r, role, a: s * 1000 + r + 47,
    "solve": lambda s, r, role, a: s * 1000 + r * 7919,
    "cross-check": lambda s, r, role, a: s * 1000 + r * 7919 + 17,
    "finetune": lambda s, r, role, a: s + r * 31 + len(role),  # the matched control's fine-tune uses it too
}
STAGES_WITH_SEEDS = tuple(_FORMULAS)


def stage_seed(stage: str, seed: int, round_idx: int, role: str = "", attempt: int = 0) -> int:
    """The seed `stage` uses in round `round_idx` of a run seeded `seed` (`role` for fine-tuning, `attempt` for
    the retried spec pass).

    >>> stage_seed("generate-spec", seed=0, round_idx=1, attempt=2)
    138
    >>> stage_seed("ingest", 0, 0)
    Traceback (most recent call last):
    ...
    ValueError: stage 'ingest' draws no seed; stages with seeds: propose, generate, generate-spec, score, solve, cross-check, finetune
    """
    if stage not in _FORMULAS:
        raise ValueError(f"stage {stage!r} draws no seed; stages with seeds: {', '.join(STAGES_WITH_SEEDS)}")
    return _FORMULAS[stage](seed, round_idx, role, attempt)
