"""Answer normalisation: one canonical spelling per answer before voting or scoring.

    >>> normalize_answer(" Yes. ")
    'yes'
    >>> normalize_answer("3")
    'three'
"""

from __future__ import annotations

import re

_NUMBERS = {str(i): w for i, w in enumerate(
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"))}
_YES_NO = {"yes": "yes", "yeah": "yes", "true": "yes", "y": "yes", "no": "no", "false": "no", "n": "no"}
_ARTICLES = {"a", "an", "the"}


def normalize_answer(text: str) -> str:
    """Lower-case, strip punctuation and articles, canonical numbers and yes/no."""
    words = [w for w in re.sub(r"[^\w\s]", " ", text.lower()).split() if w not in _ARTICLES]
    words = [_NUMBERS.get(w, w) for w in words]
    if len(words) == 1:
        return _YES_NO.get(words[0], words[0])
    return " ".join(words)
