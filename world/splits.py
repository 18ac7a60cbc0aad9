"""Reproducible, disjoint scene splits: each (split, seed, index) has its own random stream."""
from __future__ import annotations

import random
import re

from world.scenes import Scene, sample_scene

# "validation" is held out like "eval" but reserved for choices (tuning, the promotion gate);
# "eval" is only ever reported.
SPLITS: tuple[str, ...] = ("seed", "unlabeled", "validation", "eval")
_URI = re.compile(r"world://([a-z]+)/(\d+)/(\d+)")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")


def scene_at(split: str, index: int, seed: int = 0) -> Scene:
    _check_split(split)
    # String seeding is stable across processes, unlike hash() of a tuple.
    return sample_scene(random.Random(f"{split}:{seed}:{index}"))


def scenes(split: str, n: int, seed: int = 0, start: int = 0) -> list[Scene]:
    return [scene_at(split, i, seed) for i in range(start, start + n)]


def source_uri(split: str, index: int, seed: int) -> str:
    _check_split(split)
    return f"world://{split}/{seed}/{index}"


def parse_source_uri(uri: str) -> tuple[str, int, int]:
    """(split, index, seed) of a world URI."""
    m = _URI.fullmatch(uri) if isinstance(uri, str) else None
    if m is None or m.group(1) not in SPLITS:
        raise ValueError(f"bad world source URI {uri!r}")
    return m.group(1), int(m.group(3)), int(m.group(2))
