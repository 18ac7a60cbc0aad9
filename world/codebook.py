"""Exact, lossless 8x8 patch codebook: every possible cell patch of the world gets one code."""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

from world.render import render
from world.scenes import CELL, COLORS, GRID, IMAGE_SIZE, SHAPES, SIZES, Scene, SceneObject

TOKENS_PER_IMAGE = GRID * GRID


def _all_patches() -> np.ndarray:
    patches = [np.zeros((CELL, CELL, 3), dtype=np.uint8)]
    for shape in SHAPES:
        for color in COLORS:
            for size in SIZES:
                for jy in range(CELL - size):
                    for jx in range(CELL - size):
                        image = render(Scene((SceneObject(shape, color, size, 0, jx, jy),)))
                        patches.append(image[:CELL, :CELL])
    return np.stack(patches)


@lru_cache(maxsize=1)
def codebook() -> np.ndarray:
    """(N_CODES, 8, 8, 3) uint8 patches, indexed by code."""
    patches = _all_patches()
    patches.setflags(write=False)
    return patches


@lru_cache(maxsize=1)
def _lookup() -> dict[bytes, int]:
    return {p.tobytes(): i for i, p in enumerate(codebook())}


@lru_cache(maxsize=1)
def _flat_codebook() -> tuple[np.ndarray, np.ndarray]:
    flat = codebook().reshape(len(codebook()), -1).astype(np.float64)
    return flat, (flat**2).sum(axis=1)


N_CODES = len(codebook())


def to_patches(image: np.ndarray) -> np.ndarray:
    """(16, 8, 8, 3) cell patches in row-major cell order."""
    if image.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(f"expected a ({IMAGE_SIZE}, {IMAGE_SIZE}, 3) image, got {image.shape}")
    return image.reshape(GRID, CELL, GRID, CELL, 3).transpose(0, 2, 1, 3, 4).reshape(-1, CELL, CELL, 3)


def _nearest(patch: np.ndarray) -> int:
    flat, norms = _flat_codebook()
    x = patch.reshape(-1).astype(np.float64)
    return int(np.argmin(norms - 2.0 * flat @ x))


def encode(image: np.ndarray) -> list[int]:
    patches = to_patches(np.asarray(image).astype(np.uint8, copy=False))
    lookup = _lookup()
    return [lookup.get(p.tobytes()) if p.tobytes() in lookup else _nearest(p) for p in patches]


def decode(codes: Sequence[int]) -> np.ndarray:
    if len(codes) != TOKENS_PER_IMAGE:
        raise ValueError(f"expected {TOKENS_PER_IMAGE} codes, got {len(codes)}")
    for c in codes:
        if not isinstance(c, (int, np.integer)) or not 0 <= int(c) < N_CODES:
            raise ValueError(f"invalid code {c!r}")
    patches = codebook()[np.asarray(codes, dtype=np.int64)]
    return patches.reshape(GRID, GRID, CELL, CELL, 3).transpose(0, 2, 1, 3, 4).reshape(IMAGE_SIZE, IMAGE_SIZE, 3).copy()
