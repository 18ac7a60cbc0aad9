"""The one text normal form: natural, hand-written questions and prompts take the world's spelling,
the world's own texts are left alone, and out-of-vocabulary words are counted."""

import doctest

import pytest

import models.instruction_prompts
import models.vocabulary
import tasks.logic.answers
import tasks.logic.vocabulary_coverage
import text.normal_form
from models.vocabulary import Vocabulary
from tasks.logic.answers import normalize_answer
from tasks.logic.vocabulary_coverage import VocabularyCoverage, coverage_lines, coverage_metrics, vocabulary_coverage
from world import language, seed_set
from world.geneval_metadata import spec_from_metadata
from world.prompts import ObjectSpec
from text.normal_form import normalize_text

NATURAL = [
    ("What colour is the triangle?", "what color is the triangle ?"),
    ("What color is the triangle?", "what color is the triangle ?"),
    ("How many circles are there?", "how many circles are there ?"),
    ("How many circles are there ?", "how many circles are there ?"),
    ("Is the red circle left of the blue square?", "is the red circle left of the blue square ?"),
    ("IS THERE A GREEN SQUARE??", "is there a green square ?"),
    ("Is there a \u201cred\u201d circle?", "is there a red circle ?"),
    ("Is there a \u2018red\u2019 circle?", "is there a red circle ?"),
    ("What shape  is the   purple object?", "what shape is the purple object ?"),
    ("What\u00a0shape is the cyan\u2003object?\u00a0", "what shape is the cyan object ?"),
    ("  How many objects are there?\n", "how many objects are there ?"),
    ("\uff37hat color is the square\uff1f", "what color is the square ?"),  # full-width letters and "?"
    ("Is the yellow triangle below the blue circle?.", "is the yellow triangle below the blue circle ?"),
    ("Two red circles and a blue square.", "two red circles and a blue square"),
    ("A circle, left of a square!", "a circle left of a square"),
    ("Red.", "red"),
    ("What\u2019s left of the square?", "what's left of the square ?"),
    ("The bar is 2.5 cm, or 3,000 px; ratio 3:4.", "the bar is 2.5 cm or 3,000 px ratio 3:4"),
    ("How many squares are there? | two | three", "how many squares are there ? | two | three"),
    ("A red circle | Is there a red circle? = yes", "a red circle | is there a red circle ? = yes"),
    ("", ""),
]


@pytest.mark.parametrize("text,expected", NATURAL)
def test_natural_texts_take_the_worlds_spelling(text, expected):
    assert normalize_text(text) == expected
    assert normalize_text(expected) == expected  # idempotent


def test_the_worlds_own_texts_are_fixed_points():
    texts = set()
    for ex in seed_set.seed_examples(n_scenes=20, seed=0, framings=("canonical",)):
        texts.update({ex.get("prompt", ""), ex.get("target", "")})
    assert len(texts) > 100
    assert [t for t in texts if normalize_text(t) != t] == []


def test_the_shapes_vocabulary_reads_natural_questions_without_unk():
    vocab = Vocabulary.build()
    unk = vocab.id("<unk>")
    for text, expected in NATURAL[:13]:
        assert unk not in vocab.encode_text(text), text
        assert vocab.encode_text(text) == vocab.encode_text(expected)
        assert vocab.unknown_words(text) == []
    assert vocab.unknown_words("What colour is the bench?  Is it “Wooden”?") == ["bench", "it", "wooden"]


def test_the_worlds_parsers_read_natural_questions_and_prompts():
    assert language.question_family("What colour is the triangle?") == "color"
    assert language.question_family("Is the red circle left of the blue square?") == "relation"
    assert language.question_family("How many circles are there?") == "count"
    assert language.parse_prompt("A red circle.") == language.parse_prompt("a red circle")
    assert spec_from_metadata({"tag": "colors", "include": [{"class": "Circle", "count": 1, "color": "Red"}]}
                              ).objects == (ObjectSpec("circle", "red", 1),)


def test_answers_take_the_text_normal_form_first():
    assert normalize_answer("\u201cYes.\u201d") == "yes"
    assert normalize_answer("Two.") == normalize_answer("2") == "two"
    assert normalize_answer("\uff13") == "three"  # a full-width digit
    assert normalize_answer("The Red one!") == "red one"


def test_vocabulary_coverage_counts_words_and_ranks_unknown_ones():
    texts = ["Is there a bench?", "How many benches are there?", "Is the bench left of the tree?"]
    unknown = [["bench"], ["benches"], ["bench", "tree"]]
    c = vocabulary_coverage(texts, unknown, top=2)
    assert (c.n_words, c.n_unknown) == (5 + 6 + 8, 4)
    assert c.top_unknown == (("bench", 2), ("benches", 1))  # ties alphabetically
    assert coverage_metrics(c, "geneval")["geneval_oov_share"] == pytest.approx(4 / 19)
    assert vocabulary_coverage([], []).oov_share == 0.0
    with pytest.raises(ValueError, match="2 texts but 1 lists"):
        vocabulary_coverage(["a", "b"], [[]])


def test_a_warning_names_examples_only_above_five_percent():
    at_edge = coverage_lines(VocabularyCoverage(100, 5, (("bench", 5),)), "vqa.jsonl")
    assert len(at_edge) == 1 and "5 of 100 words (5.0%)" in at_edge[0] and "bench (5)" in at_edge[0]
    above = coverage_lines(VocabularyCoverage(100, 6, (("bench", 4), ("tree", 2))), "vqa.jsonl")
    assert above[1].startswith("WARNING: 6.0% of the words of vqa.jsonl") and "'bench', 'tree'" in above[1]
    assert "most frequent: none" in coverage_lines(VocabularyCoverage(3, 0, ()), "f")[0]


@pytest.mark.parametrize("module", [text.normal_form, tasks.logic.vocabulary_coverage, tasks.logic.answers,
                                    models.vocabulary, models.instruction_prompts])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
