"""A generated image that misses its prompt, corrected tile by tile with the Solver's own tile names.

Half of the colour-attribution prompts get no right image in eight samples from the base (measured on one
compose round: 98 of 200 prompts; "a cyan circle and a green square" comes out as a green circle and a blue
square), so imitating the best right sample cannot teach them: there is none. But the Generator's sample
already has a layout (which cells hold objects, where the Generator itself puts them), and the Solver names
tiles far better than the Generator draws them. The correction keeps the sample's object cells and puts into
each one a tile whose name is what the prompt asks, changing as few cells as possible, with the prompt's
objects assigned to the cells so that any relation holds. Only samples whose object count already equals the
prompt's are corrected, so the Generator's own placement and count are kept; a cell's new tile is one the
Solver named that way (tasks/tile_verify.py draws it from the round's unlabeled images).

No hidden scene or parser enters: the prompt grammar, the grid and the Solver's names decide everything.

    >>> sample = [PerceivedObject("green", "circle", 0), PerceivedObject("blue", "square", 5)]
    >>> names = {("cyan", "circle"), ("green", "square"), ("green", "circle"), ("blue", "square"), ("blue", "circle")}
    >>> fixed = corrected_objects("a cyan circle and a green square", sample, 4, names)
    >>> [(o.color, o.shape, o.cell) for o in fixed], changed_cells(sample, fixed)
    ([('cyan', 'circle', 0), ('green', 'square', 5)], [0, 5])
    >>> [(o.color, o.shape, o.cell) for o in corrected_objects("a square left of a circle", sample, 4, names)]
    [('green', 'square', 0), ('blue', 'circle', 5)]
"""

from __future__ import annotations

import itertools
from typing import Collection, Sequence

from tasks.logic.tile_verdicts import MATCH, PerceivedObject, tile_verdict
from world.prompts import parse_prompt


def corrected_objects(prompt: str, objects: Sequence[PerceivedObject] | None, grid: int,
                      available: Collection[tuple[str, str]]) -> list[PerceivedObject] | None:
    """The objects (sorted by cell) closest to `objects` that match `prompt`, on the same cells, using only tile
    names in `available`; None when the prompt is outside the grammar, any tile is unnamed, the counts differ or
    no assignment works. A colour the prompt leaves open keeps the sample's colour where such a tile exists.

    >>> corrected_objects("three circles", [PerceivedObject("red", "circle", 1)], 4, {("red", "circle")}) is None
    True
    """
    try:
        spec = parse_prompt(prompt)
    except ValueError:
        return None
    if objects is None or len(objects) != spec.n_objects or not objects:
        return None
    wanted = [(o.color, o.shape) for o in spec.objects for _ in range(o.count)]
    colours = sorted({c for c, _ in available})
    best: tuple[int, list[PerceivedObject]] | None = None
    for order in sorted(set(itertools.permutations(range(len(objects))))):
        new = []
        for (colour, shape), index in zip(wanted, order):
            own = objects[index]
            choices = [colour] if colour is not None else [own.color] + [c for c in colours if c != own.color]
            chosen = next((c for c in choices if (c, shape) in available), None)
            if chosen is None:
                break
            new.append(PerceivedObject(chosen, shape, own.cell))
        else:
            new.sort(key=lambda o: o.cell)
            if tile_verdict(prompt, new, grid) != MATCH:
                continue
            changes = len(changed_cells(objects, new))
            if best is None or changes < best[0]:
                best = (changes, new)
    return None if best is None else best[1]


def changed_cells(before: Sequence[PerceivedObject], after: Sequence[PerceivedObject]) -> list[int]:
    """The cells whose named object differs between two readings of the same layout."""
    old = {o.cell: (o.color, o.shape) for o in before}
    return sorted(o.cell for o in after if old.get(o.cell) != (o.color, o.shape))
