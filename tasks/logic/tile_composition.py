"""New scenes recomposed from the tiles of unlabeled images, with labels known by construction.

In a tiled world every object sits inside one cell of a grid, so an image cuts cleanly into its cells.
The most common tile of a round's images is the background; every other distinct tile is shown alone on
the background in a few cells and captioned by the Solver, and it gets a name only when all those
captions agree and each names exactly one object. An image whose object tiles all have names is then
recomposed: the same tiles, moved to new cells. What the new image shows is known by construction (its
objects are the named tiles, at the cells they were put in), so questions about it, relations included,
have labels as accurate as the names, which are read from single-object images, the easiest thing the
model sees. "Answers known by construction" (Vision-Zero, Spatial-SSRL; `../shared/docs/LABEL_SOURCES.md`).

No hidden scene enters: the background is a pixel statistic of the unlabeled images, the names are the
model's own captions, and the positions are the ones this module chose.

    >>> image = np.zeros((4, 4, 3), np.uint8); image[0:2, 2:4] = 9
    >>> tiles = split_tiles(image, 2)
    >>> [int(t.max()) for t in tiles]
    [0, 9, 0, 0]
    >>> moved = join_tiles(placed_tiles([tiles[1]], [2], tiles[0], 2), 2)
    >>> [int(t.max()) for t in split_tiles(moved, 2)]
    [0, 0, 9, 0]
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from typing import Sequence

import numpy as np

# A tiled image has its background in most cells; below this share the images are not tiled scenes.
MIN_BACKGROUND_SHARE = 0.4


def split_tiles(image: np.ndarray, grid: int) -> np.ndarray:
    """The grid*grid cells of an (H, W, C) image, row-major: shape (grid*grid, H/grid, W/grid, C)."""
    h, w, c = image.shape
    if h % grid or w % grid:
        raise ValueError(f"an image of {h}x{w} pixels does not split into a {grid}x{grid} grid")
    th, tw = h // grid, w // grid
    return image.reshape(grid, th, grid, tw, c).transpose(0, 2, 1, 3, 4).reshape(grid * grid, th, tw, c)


def join_tiles(tiles: np.ndarray, grid: int) -> np.ndarray:
    """The inverse of `split_tiles`."""
    n, th, tw, c = tiles.shape
    if n != grid * grid:
        raise ValueError(f"{n} tiles do not fill a {grid}x{grid} grid")
    return np.ascontiguousarray(tiles.reshape(grid, grid, th, tw, c).transpose(0, 2, 1, 3, 4)
                                .reshape(grid * th, grid * tw, c))


def tile_key(tile: np.ndarray) -> str:
    """A stable id of a tile's pixels."""
    return hashlib.sha1(str(tile.shape).encode() + np.ascontiguousarray(tile).tobytes()).hexdigest()[:16]


def background_of(images: Sequence[np.ndarray], grid: int) -> tuple[np.ndarray, float]:
    """The most common tile of `images` and the share of all cells it fills (ties: the smallest key).

    >>> bg, share = background_of([np.zeros((4, 4, 3), np.uint8)], 2)
    >>> int(bg.max()), share
    (0, 1.0)
    """
    counts: Counter[str] = Counter()
    examples: dict[str, np.ndarray] = {}
    for image in images:
        for tile in split_tiles(image, grid):
            key = tile_key(tile)
            counts[key] += 1
            examples.setdefault(key, tile)
    if not counts:
        raise ValueError("no images to find a background in")
    top = max(counts.values())
    key = min(k for k, n in counts.items() if n == top)
    return examples[key], top / sum(counts.values())


def probe_cells(grid: int) -> list[int]:
    """The cells a tile is shown in to be named: spread over the grid so no position is favoured.

    >>> probe_cells(4)
    [3, 5, 10]
    """
    n = grid * grid
    return sorted({grid + 1 if grid > 1 else 0, n - grid - 2 if grid > 2 else n - 1, grid - 1})


def placed_tiles(tiles: Sequence[np.ndarray], cells: Sequence[int], background: np.ndarray,
                 grid: int) -> np.ndarray:
    """A grid of background tiles with `tiles[i]` in `cells[i]`."""
    if len(set(cells)) != len(cells):
        raise ValueError(f"cells {list(cells)} repeat a cell")
    out = np.repeat(background[None], grid * grid, axis=0).copy()
    for tile, cell in zip(tiles, cells):
        out[cell] = tile
    return out


def agreed_name(names: Sequence[tuple[str, str] | None]) -> tuple[str, str] | None:
    """The name every probe gave, or None when any probe named no single object or two probes differ.

    >>> agreed_name([("red", "circle")] * 3), agreed_name([("red", "circle"), ("red", "square")])
    (('red', 'circle'), None)
    """
    if not names or any(n is None for n in names) or len(set(names)) != 1:
        return None
    return names[0]


def new_cells(n_objects: int, grid: int, rng: random.Random) -> list[int]:
    """Distinct random cells for `n_objects` tiles (the i-th tile goes to the i-th cell)."""
    return rng.sample(range(grid * grid), n_objects)
