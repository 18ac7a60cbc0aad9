"""Preference pairs for the Generator: within one spec, a sample the model's own tile reading matched against
the prompt (chosen) beside one it did not (rejected). Pure: ids in, id pairs out.

Only "match" and "mismatch" verdicts pair (tasks/logic/tile_verdicts.py); a sample whose tiles the model could
not name, or whose prompt is outside what it can read, says nothing either way. A spec with both kinds gives
max(#match, #mismatch) pairs: every sample of the larger side once, the smaller side's cycled in a seeded order,
so no sample is dropped and none is used more than its side's share.

    >>> preference_pairs([("s:g0", "s", "match"), ("s:g1", "s", "mismatch"), ("s:g2", "s", "mismatch"),
    ...                   ("t:g0", "t", "match"), ("t:g1", "t", "unnamed-tile")], seed=0)
    [('s:g0', 's:g1'), ('s:g0', 's:g2')]
"""

from __future__ import annotations

import random
from collections import defaultdict


def preference_pairs(verdicts: list[tuple[str, str, str]], seed: int) -> list[tuple[str, str]]:
    """(generation_id, spec_id, verdict) rows -> (chosen, rejected) generation ids, specs in sorted order."""
    sides: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"match": [], "mismatch": []})
    for generation_id, spec_id, verdict in verdicts:
        if verdict in ("match", "mismatch"):
            sides[spec_id][verdict].append(generation_id)
    pairs: list[tuple[str, str]] = []
    for spec_id in sorted(sides):
        chosen, rejected = sorted(sides[spec_id]["match"]), sorted(sides[spec_id]["mismatch"])
        if not chosen or not rejected:
            continue
        rng = random.Random(f"{seed}:{spec_id}")
        rng.shuffle(chosen)
        rng.shuffle(rejected)
        n = max(len(chosen), len(rejected))
        pairs.extend(sorted((chosen[k % len(chosen)], rejected[k % len(rejected)]) for k in range(n)))
    return pairs
