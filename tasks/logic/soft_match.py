"""Soft matching of an answer against an expected answer (METHOD.md, QA fidelity).

exact 1; substring 0.8; numbers 1 / 0.7 / 0.4 / 0 at relative error <= 1% / 5% / 20% / more;
otherwise word Jaccard.

    >>> soft_match("two", "2"), soft_match("red circle", "red"), soft_match("big red", "red blue")
    (1.0, 0.8, 0.3333333333333333)
"""

from __future__ import annotations

from tasks.logic.answers import normalize_answer

_WORD_NUMBERS = {w: i for i, w in enumerate(
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"))}


def _number(text: str) -> float | None:
    if text in _WORD_NUMBERS:
        return float(_WORD_NUMBERS[text])
    try:
        return float(text)
    except ValueError:
        return None


def soft_match(answer: str, expected: str) -> float:
    a, e = normalize_answer(answer), normalize_answer(expected)
    if a == e:
        return 1.0
    na, ne = _number(a), _number(e)
    if na is not None and ne is not None:
        rel = abs(na - ne) / max(abs(ne), 1e-9)
        return 1.0 if rel <= 0.01 else 0.7 if rel <= 0.05 else 0.4 if rel <= 0.2 else 0.0
    if a and e and (a in e or e in a):
        return 0.8
    wa, we = set(a.split()), set(e.split())
    return len(wa & we) / len(wa | we) if wa | we else 0.0
