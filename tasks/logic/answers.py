"""Answer normalisation: one canonical spelling per answer before voting or scoring.

Answers first take the world's text normal form (`text.normal_form`), then lose punctuation
and articles and take canonical numbers and yes/no.

    >>> normalize_answer(" Yes. ")
    'yes'
    >>> normalize_answer("3")
    'three'
"""

from __future__ import annotations

import re

from text.normal_form import normalize_text

_NUMBERS = {str(i): w for i, w in enumerate(
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"))}
_YES_NO = {"yes": "yes", "yeah": "yes", "true": "yes", "y": "yes", "no": "no", "false": "no", "n": "no"}
_ARTICLES = {"a", "an", "the"}


def normalize_answer(text: str) -> str:
    """The text normal form, without punctuation and articles, with canonical numbers and yes/no."""
    words = [w for w in re.sub(r"[^\w\s]", " ", normalize_text(text)).split() if w not in _ARTICLES]
    words = [_NUMBERS.get(w, w) for w in words]
    if len(words) == 1:
        return _YES_NO.get(words[0], words[0])
    return " ".join(words)


def map_to_validators(answer: str, validators: tuple[str, ...] | list[str], threshold: float = 0.8) -> str:
    """Map a normalised answer onto the Proposer's hidden two-answer validator when it matches one.

    The best soft match at or above `threshold` wins; otherwise the answer stays as it is.

    >>> map_to_validators("the red one", ("red", "blue"))
    'red'
    >>> map_to_validators("green", ("red", "blue"))
    'green'
    """
    from tasks.logic.soft_match import soft_match

    norm = normalize_answer(answer)
    scored = [(soft_match(norm, v), -i, normalize_answer(v)) for i, v in enumerate(validators) if v]
    if not scored:
        return norm
    best = max(scored)
    return best[2] if best[0] >= threshold else norm
