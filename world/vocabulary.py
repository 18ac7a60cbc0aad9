"""Shared words of the world's templates: number words, plurals, relations and the full word list."""
from __future__ import annotations

from world.scenes import COLORS, SHAPES

NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
PLURALS: dict[str, str] = {shape: shape + "s" for shape in SHAPES}
SINGULARS: dict[str, str] = {plural: shape for shape, plural in PLURALS.items()}

_TEMPLATE_WORDS = (
    "what color is the shape object how many are there ? a yes no and nothing malformed object objects many"
).split()


def number_word(n: int) -> str:
    if not 0 <= n < len(NUMBER_WORDS):
        raise ValueError(f"no number word for {n}")
    return NUMBER_WORDS[n]


def noun(shape: str, count: int) -> str:
    return shape if count == 1 else PLURALS[shape]


def _all_words() -> tuple[str, ...]:
    words = set(_TEMPLATE_WORDS) | set(SHAPES) | set(PLURALS.values()) | set(COLORS) | set(NUMBER_WORDS)
    for relation in RELATIONS:
        words.update(relation.split())
    return tuple(sorted(words))


WORDS: tuple[str, ...] = _all_words()
