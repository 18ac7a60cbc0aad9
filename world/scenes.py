"""Scene model of the shapes world: objects on a 4x4 grid of 8x8 cells, and random scene sampling."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 40),
    "blue": (40, 70, 240),
    "yellow": (240, 230, 30),
    "purple": (170, 40, 220),
    "cyan": (30, 220, 230),
}
SIZES: tuple[int, ...] = (5, 6, 7)
GRID = 4
CELL = 8
IMAGE_SIZE = GRID * CELL
# Boxes stay inside pixels 0..6 of a cell, so pixel 7 is always a gap to the next cell.
_MAX_EXTENT = CELL - 1


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    size: int
    cell: int  # 0..15 row-major
    jx: int
    jy: int

    @property
    def row(self) -> int:
        return self.cell // GRID

    @property
    def col(self) -> int:
        return self.cell % GRID

    def __post_init__(self) -> None:
        if self.shape not in SHAPES or self.color not in COLORS or self.size not in SIZES:
            raise ValueError(f"invalid object attributes: {self}")
        if not 0 <= self.cell < GRID * GRID:
            raise ValueError(f"invalid cell {self.cell}")
        limit = _MAX_EXTENT - self.size
        if not (0 <= self.jx <= limit and 0 <= self.jy <= limit):
            raise ValueError(f"jitter out of range for size {self.size}: ({self.jx}, {self.jy})")


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "objects": [
                {"shape": o.shape, "color": o.color, "size": o.size, "cell": o.cell, "jx": o.jx, "jy": o.jy}
                for o in self.objects
            ]
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "Scene":
        return Scene(tuple(SceneObject(**{k: o[k] for k in ("shape", "color", "size", "cell", "jx", "jy")})
                           for o in data["objects"]))


def random_object(rng: random.Random, cell: int, shape: str | None = None, color: str | None = None) -> SceneObject:
    """An object in `cell` with the given attributes fixed and the rest uniform."""
    shape = shape if shape is not None else rng.choice(SHAPES)
    color = color if color is not None else rng.choice(list(COLORS))
    size = rng.choice(SIZES)
    limit = _MAX_EXTENT - size
    return SceneObject(shape, color, size, cell, rng.randint(0, limit), rng.randint(0, limit))


def sample_scene(rng: random.Random, n_objects: int | None = None) -> Scene:
    n = rng.randint(1, 4) if n_objects is None else n_objects
    if not 0 <= n <= GRID * GRID:
        raise ValueError(f"invalid n_objects {n}")
    cells = sorted(rng.sample(range(GRID * GRID), n))
    return Scene(tuple(random_object(rng, c) for c in cells))
