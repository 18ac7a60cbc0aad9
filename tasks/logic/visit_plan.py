"""Which examples an imitation update visits, before any is loaded: the batches as (source, index) pairs.

Each visit draws from the replay set with probability `replay_fraction` (only when there is one), else from the
round's own examples, uniformly. Knowing the visits first lets the fine-tune stage load only the own examples
the steps will see, so its memory follows the steps, not the pool (a round over 20k images stores about 280k
Solver examples, of which 480 steps of 64 visit at most 30,720). The draws are those of Python's
`random.Random(seed)`, in the order `random() < replay_fraction` then `choice`, so a plan is what the update
drew before plans existed.

    >>> visit_batches(3, 2, 0.5, 2, seed=0, n_batches=2)
    [[('own', 1), ('replay', 1)], [('replay', 1), ('own', 1)]]
    >>> sorted(own_indices(visit_batches(3, 0, 0.5, 4, seed=1, n_batches=3)))
    [0, 1, 2]
"""

from __future__ import annotations

import itertools
import random
from typing import Iterator


def iter_visit_batches(n_own: int, n_replay: int, replay_fraction: float, batch_size: int,
                       seed: int) -> Iterator[list[tuple[str, int]]]:
    """Endless batches of `batch_size` visits, each ("own" | "replay", index)."""
    if n_own <= 0 and (n_replay <= 0 or replay_fraction < 1.0):
        raise ValueError(f"no own examples to visit (n_own={n_own}, n_replay={n_replay}, "
                         f"replay_fraction={replay_fraction})")
    rng = random.Random(seed)
    own, replay = range(n_own), range(n_replay)
    while True:
        yield [("replay", rng.choice(replay)) if n_replay and rng.random() < replay_fraction
               else ("own", rng.choice(own)) for _ in range(batch_size)]


def visit_batches(n_own: int, n_replay: int, replay_fraction: float, batch_size: int, seed: int,
                  n_batches: int) -> list[list[tuple[str, int]]]:
    """The first `n_batches` batches of `iter_visit_batches`."""
    return list(itertools.islice(iter_visit_batches(n_own, n_replay, replay_fraction, batch_size, seed), n_batches))


def own_indices(batches: list[list[tuple[str, int]]]) -> set[int]:
    """The own examples a plan visits."""
    return {index for batch in batches for source, index in batch if source == "own"}
