"""The one text normal form of questions, prompts, answers and captions: the world's spaced spelling.

People write "What colour is the triangle?"; the world's templates write "what color is the
triangle ?". Every backbone's text path and the evaluation harness pass text through
`normalize_text` first, so a whitespace tokenizer sees the words it was trained on:

- Unicode NFKC (full-width letters, non-breaking and other unicode spaces become plain ones),
  zero-width characters go, curly quotes and apostrophes become straight ones, then lower case;
- "?" is the world's question marker: it becomes a word of its own ("triangle?" -> "triangle ?");
- sentence punctuation (. , ! ; :) and quotation marks carry nothing in the world's language and are
  dropped, except between digits ("2.5", "3,000" stay) and apostrophes inside words ("what's");
- British spellings of the world's words take the world's spelling ("colour" -> "color");
- runs of whitespace become one space; the structured-output separators "|" and "=" are untouched.

    >>> normalize_text("What colour is the  Triangle?")
    'what color is the triangle ?'
    >>> normalize_text("Is there a “red” circle?\u00a0")
    'is there a red circle ?'
    >>> normalize_text("how many squares are there? | two | three")
    'how many squares are there ? | two | three'
"""

from __future__ import annotations

import functools
import re
import unicodedata

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "`": "'",
                         "\u00b4": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
                         "\u00ab": '"', "\u00bb": '"', "\u200b": "", "\u200c": "", "\u200d": "", "\ufeff": ""})
_SPELLINGS = {"colour": "color", "colours": "colors", "coloured": "colored"}
_QUESTION_MARKS = re.compile(r"\?+")
# Sentence punctuation, except between two digits (decimal points, thousands separators, ratios).
_PUNCTUATION = re.compile(r"[.,!;:](?!\d)|(?<!\d)[.,!;:]")
# Double quotes anywhere; single quotes only at a word's edge, so "what's" keeps its apostrophe.
_QUOTATION = re.compile(r"\"|(?<!\w)'|'(?!\w)")


@functools.lru_cache(maxsize=1 << 16)
def normalize_text(text: str) -> str:
    """The world's spaced, lower-case spelling of `text` (idempotent; the world's own texts are fixed points).

    >>> normalize_text("There are 2.5 circles, really!")
    'there are 2.5 circles really'
    >>> normalize_text(normalize_text("What's left of the blue square?"))
    "what's left of the blue square ?"
    """
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES).lower()
    text = _QUESTION_MARKS.sub(" ? ", text)
    text = _QUOTATION.sub(" ", _PUNCTUATION.sub(" ", text))
    return " ".join(_SPELLINGS.get(w, w) for w in text.split())
