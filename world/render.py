"""Deterministic, alias-free rendering of a scene to a 32x32 RGB uint8 image."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from world.scenes import CELL, COLORS, IMAGE_SIZE, Scene, SceneObject


def _circle(size: int) -> np.ndarray:
    centres = np.arange(size) + 0.5
    dy, dx = np.meshgrid(centres - size / 2, centres - size / 2, indexing="ij")
    return dy**2 + dx**2 <= (size / 2) ** 2


def _triangle(size: int) -> np.ndarray:
    # Half-width at the bottom edge of row r grows linearly, so rows widen downward to the full base.
    centres = np.arange(size) + 0.5
    rows = np.arange(size)[:, None]
    return np.abs(centres[None, :] - size / 2) <= (rows + 1) / 2


@lru_cache(maxsize=None)
def shape_mask(shape: str, size: int) -> np.ndarray:
    """Boolean (size, size) mask of a shape; read-only because it is cached."""
    if shape == "square":
        mask = np.ones((size, size), dtype=bool)
    elif shape == "circle":
        mask = _circle(size)
    elif shape == "triangle":
        mask = _triangle(size)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    mask.setflags(write=False)
    return mask


def draw_object(image: np.ndarray, obj: SceneObject) -> None:
    y0 = obj.row * CELL + obj.jy
    x0 = obj.col * CELL + obj.jx
    box = image[y0:y0 + obj.size, x0:x0 + obj.size]
    box[shape_mask(obj.shape, obj.size)] = COLORS[obj.color]


def render(scene: Scene) -> np.ndarray:
    image = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for obj in scene.objects:
        draw_object(image, obj)
    return image
