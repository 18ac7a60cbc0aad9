"""Which words of a text a transformers tokenizer cannot represent (those it maps to its unknown token).

Byte-level BPE tokenizers represent every word, so they report none; word-level ones (the tiny test
tokenizers) report the words outside their vocabulary.
"""

from __future__ import annotations

from text.normal_form import normalize_text


def tokenizer_unknown_words(tokenizer, texts: list[str]) -> list[list[str]]:
    """Per text, the words of its normal form whose token ids contain `tokenizer.unk_token_id`."""
    words = [normalize_text(t).split() for t in texts]
    unk = tokenizer.unk_token_id
    distinct = sorted({w for ws in words for w in ws})
    if unk is None or not distinct:
        return [[] for _ in texts]
    ids = tokenizer(distinct, add_special_tokens=False)["input_ids"]
    unknown = {w for w, i in zip(distinct, ids) if unk in i}
    return [[w for w in ws if w in unknown] for ws in words]
