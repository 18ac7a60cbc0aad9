"""Canonical scene captions: "one red circle and two green triangles"."""
from __future__ import annotations

from collections import Counter
from typing import Iterable

from world.scenes import COLORS, SHAPES, Scene
from text.normal_form import normalize_text
from world.vocabulary import NUMBER_WORDS, noun, number_word

_COLOR_ORDER = {c: i for i, c in enumerate(COLORS)}
_SHAPE_ORDER = {s: i for i, s in enumerate(SHAPES)}


def _amount(n: int) -> str:
    # Parsed generations can hold more objects than any true scene; they still need a caption.
    return number_word(n) if n < len(NUMBER_WORDS) else "many"


def caption_of(pairs: Iterable[tuple[str, str]], n_malformed: int = 0) -> str:
    """Caption of (color, shape) pairs, grouped and sorted by shape order then colour order."""
    counts = Counter(pairs)
    keys = sorted(counts, key=lambda k: (_SHAPE_ORDER[k[1]], _COLOR_ORDER[k[0]]))
    items = [f"{_amount(counts[k])} {k[0]} {noun(k[1], counts[k])}" for k in keys]
    if n_malformed:
        # Only the parser sees malformed objects; naming them makes a flawed image's caption wrong.
        items.append(f"{_amount(n_malformed)} malformed {'object' if n_malformed == 1 else 'objects'}")
    return " and ".join(items) if items else "nothing"


def caption(scene: Scene) -> str:
    return caption_of((o.color, o.shape) for o in scene.objects)


def single_object(text: str) -> tuple[str, str] | None:
    """(colour, shape) when `text` is the caption of exactly one object, else None.

    >>> single_object("one red circle"), single_object("two red circles")
    (('red', 'circle'), None)
    """
    words = normalize_text(text).split()
    if len(words) == 3 and words[0] == "one" and words[1] in COLORS and words[2] in SHAPES:
        return words[1], words[2]
    return None
