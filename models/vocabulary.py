"""The shared text + image-code vocabulary of the embedded shapes backbone.

One id space holds special tokens, Solver framing tokens, the world's words and the
253 exact image codes of `world.codebook`. Text takes the world's normal form
(`text.normal_form`: lower case, "?" spaced off, sentence punctuation dropped) and is split on
whitespace, so tokenisation is lossless for every template text and natural spellings of it.

    >>> vocab = Vocabulary.build()
    >>> vocab.decode_text(vocab.encode_text("How many objects are there?"))
    'how many objects are there ?'
    >>> vocab.unknown_words("How many benches are there?")
    ['benches']
"""

from __future__ import annotations

from dataclasses import dataclass

from world import codebook, language
from text.normal_form import normalize_text

SPECIALS = (
    "<pad>", "<bos>", "<eos>", "<unk>",
    "<img>", "</img>",
    "<vqa>", "<ans>", "<cap>", "<ask>", "<spec>", "<gen>", "<emb>",
)
# The Solver answers each question under N prompt framings (METHOD.md, Solve step 4).
FRAMINGS = ("canonical", "observational", "analyst", "direct", "examiner", "concise", "evidence")
# Separators of structured Proposer outputs: "question ? | answer | answer" and
# "prompt | question ? = answer | question ? = answer".
SEPARATORS = ("|", "=")


@dataclass(frozen=True)
class Vocabulary:
    """Token strings in id order; image code c has id `image_offset + c`."""

    tokens: tuple[str, ...]
    image_offset: int
    n_image_codes: int

    @classmethod
    def build(cls) -> "Vocabulary":
        words = tuple(w for w in language.WORDS if w not in SEPARATORS)
        text = SPECIALS + tuple(f"<f:{f}>" for f in FRAMINGS) + SEPARATORS + words
        images = tuple(f"<c{c}>" for c in range(codebook.N_CODES))
        return cls(tokens=text + images, image_offset=len(text), n_image_codes=codebook.N_CODES)

    @classmethod
    def from_tokens(cls, tokens: list[str]) -> "Vocabulary":
        offset = next(i for i, t in enumerate(tokens) if t == "<c0>")
        return cls(tokens=tuple(tokens), image_offset=offset, n_image_codes=len(tokens) - offset)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def index(self) -> dict[str, int]:
        return _index(self.tokens)

    def id(self, token: str) -> int:
        return self.index[token]

    def framing_id(self, framing: str) -> int:
        if framing not in FRAMINGS:
            raise ValueError(f"unknown framing {framing!r}; known: {', '.join(FRAMINGS)}")
        return self.index[f"<f:{framing}>"]

    def encode_text(self, text: str) -> list[int]:
        unk = self.index["<unk>"]
        return [self.index.get(w, unk) for w in normalize_text(text).split()]

    def unknown_words(self, text: str) -> list[str]:
        """The words of `text`'s normal form that `encode_text` maps to <unk>."""
        return [w for w in normalize_text(text).split() if w not in self.index]

    def decode_text(self, ids: list[int]) -> str:
        return " ".join(self.tokens[i] for i in ids if self.is_word(i))

    def is_word(self, token_id: int) -> bool:
        """True for ids that belong in decoded text (words and separators)."""
        return len(SPECIALS) + len(FRAMINGS) <= token_id < self.image_offset

    def image_ids(self, codes: list[int]) -> list[int]:
        return [self.image_offset + c for c in codes]

    def word_id_range(self) -> tuple[int, int]:
        return len(SPECIALS) + len(FRAMINGS), self.image_offset


_INDEX_CACHE: dict[tuple[str, ...], dict[str, int]] = {}


def _index(tokens: tuple[str, ...]) -> dict[str, int]:
    # Frozen dataclasses cannot hold a lazily built dict; cache it per token tuple.
    found = _INDEX_CACHE.get(tokens)
    if found is None:
        found = _INDEX_CACHE[tokens] = {t: i for i, t in enumerate(tokens)}
    return found
