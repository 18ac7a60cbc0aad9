"""Out-of-vocabulary accounting of evaluation inputs: how many words a backbone cannot read, and which.

A question the tokenizer reads as <unk> is a question the model cannot answer, so an external file
written in words outside the vocabulary scores low for a reason that has nothing to do with the model.
Words are those of each text's normal form (`text.normal_form.normalize_text`), "?" included.

    >>> c = vocabulary_coverage(["Is there a bench?", "Is the bench red?"], [["bench"], ["bench"]])
    >>> c.n_words, c.n_unknown, c.top_unknown
    (10, 2, (('bench', 2),))
    >>> coverage_metrics(c, "vqa_file")
    {'vqa_file_oov_share': 0.2, 'vqa_file_oov_words': 2.0, 'vqa_file_words': 10.0}
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from text.normal_form import normalize_text

WARN_SHARE = 0.05  # above this share of unknown words an input file is worth a warning


@dataclass(frozen=True)
class VocabularyCoverage:
    """Word counts of a set of texts; `top_unknown` is (word, count), most frequent first."""

    n_words: int
    n_unknown: int
    top_unknown: tuple[tuple[str, int], ...]

    @property
    def oov_share(self) -> float:
        return self.n_unknown / self.n_words if self.n_words else 0.0


def vocabulary_coverage(texts: list[str], unknown: list[list[str]], top: int = 10) -> VocabularyCoverage:
    """Counts of the words of `texts` and of `unknown` (per text, as `Backbone.unknown_words` returns them).

    Ties in frequency are ordered alphabetically, so the report is deterministic.
    """
    if len(texts) != len(unknown):
        raise ValueError(f"{len(texts)} texts but {len(unknown)} lists of unknown words")
    counts = Counter(w for ws in unknown for w in ws)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return VocabularyCoverage(sum(len(normalize_text(t).split()) for t in texts), sum(counts.values()),
                              tuple(ranked))


def coverage_metrics(coverage: VocabularyCoverage, prefix: str) -> dict[str, float]:
    return {f"{prefix}_oov_share": coverage.oov_share, f"{prefix}_oov_words": float(coverage.n_unknown),
            f"{prefix}_words": float(coverage.n_words)}


def coverage_lines(coverage: VocabularyCoverage, source: str, warn_share: float = WARN_SHARE) -> list[str]:
    """A summary line, and a warning line with examples when more than `warn_share` of the words are unknown
    (the file's scores then understate the model: it never saw those words).

    >>> lines = coverage_lines(VocabularyCoverage(10, 2, (("bench", 2),)), "vqa.jsonl")
    >>> print("\\n".join(lines))
    vqa.jsonl: 2 of 10 words (20.0%) are outside the backbone's vocabulary; most frequent: bench (2)
    WARNING: 20.0% of the words of vqa.jsonl are unknown to the backbone (over 5%), e.g. 'bench'
    >>> coverage_lines(VocabularyCoverage(100, 5, (("bench", 5),)), "vqa.jsonl")[1:]
    []
    """
    words = ", ".join(f"{w} ({n})" for w, n in coverage.top_unknown) or "none"
    lines = [f"{source}: {coverage.n_unknown} of {coverage.n_words} words ({coverage.oov_share:.1%}) are outside "
             f"the backbone's vocabulary; most frequent: {words}"]
    if coverage.oov_share > warn_share:
        examples = ", ".join(repr(w) for w, _ in coverage.top_unknown[:5])
        lines.append(f"WARNING: {coverage.oov_share:.1%} of the words of {source} are unknown to the backbone "
                     f"(over {warn_share:.0%}), e.g. {examples}")
    return lines
