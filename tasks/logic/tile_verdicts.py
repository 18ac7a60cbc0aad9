"""Does a generated image show what its prompt asks? Read it tile by tile, with the Solver's own tile names.

In a tiled world a generated image is a grid of cells, each the background or one whole object. The compose
stage already names every object tile it meets (the Solver captions the tile alone on the background in a few
cells, and the name counts only when those captions agree). Reading a generated image is then looking up the
name of each of its tiles: the objects it shows are the named tiles at their cells. Whether it satisfies a
prompt of the prompt grammar follows, relations included: two objects in different columns are ordered
left/right by their cells, whatever their jitter inside the cell, since each object lies inside its own cell.

This verifier is far more exact than asking the Solver questions about the whole image: relation questions
it answers at chance (0.46), but the position of a tile is read from the grid. Measured on the base model's
best-of-8 samples (one probe, 600 targeted prompts): accepted images 97.5% right for position, 100% for colour
attribution, counting and two objects, against 70% for the Solver's checks on position.

No hidden scene or parser enters: the tiles are pixels, the names the model's captions, the grammar the
world's prompt language.

    >>> names = {"r": ("red", "circle"), "b": ("blue", "square")}
    >>> objects = perceived_objects(["bg", "r", "bg", "b"], names, "bg", grid=2)
    >>> [(o.color, o.shape, o.cell) for o in objects]
    [('red', 'circle', 1), ('blue', 'square', 3)]
    >>> tile_verdict("a circle above a square", objects, grid=2)
    'match'
    >>> tile_verdict("a circle left of a square", objects, grid=2)
    'mismatch'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from world.prompts import matches, parse_prompt

MATCH, MISMATCH, UNNAMED, UNPARSED = "match", "mismatch", "unnamed-tile", "not-in-grammar"
VERDICTS = (MATCH, MISMATCH, UNNAMED, UNPARSED)


@dataclass(frozen=True)
class PerceivedObject:
    color: str
    shape: str
    cell: int


def perceived_objects(tile_keys: Sequence[str], names: Mapping[str, tuple[str, str] | None], background_key: str,
                      grid: int) -> list[PerceivedObject] | None:
    """The objects an image shows, from its row-major tile keys; None when any object tile has no name."""
    if len(tile_keys) != grid * grid:
        raise ValueError(f"{len(tile_keys)} tiles do not fill a {grid}x{grid} grid")
    out = []
    for cell, key in enumerate(tile_keys):
        if key == background_key:
            continue
        name = names.get(key)
        if name is None:
            return None
        out.append(PerceivedObject(name[0], name[1], cell))
    return out


def cell_relation(a: PerceivedObject, b: PerceivedObject, relation: str, grid: int) -> bool | None:
    """Whether `a <relation> b` holds by their cells; None when they share the row or column the relation compares
    (their order then depends on where inside the cells they sit, which the names do not say).

    >>> cell_relation(PerceivedObject("red", "circle", 0), PerceivedObject("red", "square", 5), "left of", 4)
    True
    >>> cell_relation(PerceivedObject("red", "circle", 0), PerceivedObject("red", "square", 4), "left of", 4) is None
    True
    """
    (ar, ac), (br, bc) = divmod(a.cell, grid), divmod(b.cell, grid)
    if relation in ("left of", "right of"):
        return None if ac == bc else (ac < bc) == (relation == "left of")
    if relation in ("above", "below"):
        return None if ar == br else (ar < br) == (relation == "above")
    raise ValueError(f"unknown relation {relation!r}")


def tile_verdict(prompt: str, objects: list[PerceivedObject] | None, grid: int) -> str:
    """MATCH when the named objects are exactly what `prompt` asks (an undecidable relation is no match),
    UNNAMED when some tile has no name, UNPARSED when the prompt is outside the prompt grammar."""
    try:
        spec = parse_prompt(prompt)
    except ValueError:
        return UNPARSED
    if objects is None:
        return UNNAMED
    return MATCH if matches(spec, objects, lambda a, b, r: cell_relation(a, b, r, grid)) else MISMATCH
