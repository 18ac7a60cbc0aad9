"""Label sources beyond the vote: question kinds from text, mirrored questions, the agreement rule, the
audit's aggregation, the ceiling share, and the parsed scene that lets the oracle judge generated images."""

import random

import pytest

from tasks.logic.experiment_targets import ceiling_share, target_checks
from tasks.logic.label_sources import agreement_decision, audit_rows, mirror_question, question_kind
from world import language, parser, splits
from world.render import render


@pytest.mark.parametrize("question, kind", [
    ("Is the red circle left of the blue square?", "relation"),
    ("is the green triangle below the red circle ?", "relation"),
    ("How many circles are there?", "count"),
    ("what colour is the triangle ?", "color"),
    ("What color is the square?", "color"),
    ("what shape is the red object ?", "shape"),
    ("Is there a green triangle?", "existence"),
    ("describe the picture", "other"),
])
def test_question_kind_from_text_alone(question, kind):
    assert question_kind(question) == kind


def test_mirror_swaps_left_and_right_only():
    assert mirror_question("is the red circle right of the blue square ?") == \
        "is the red circle left of the blue square ?"
    assert mirror_question("is the red circle above the blue square ?") == "is the red circle above the blue square ?"
    assert mirror_question("how many circles are there ?") == "how many circles are there ?"


def test_mirrored_question_has_the_same_true_answer_on_the_mirrored_scene():
    checked = 0
    for index in range(60):
        scene = splits.scene_at("unlabeled", index, 7)
        image = render(scene)
        mirrored = parser.parsed_scene(image[:, ::-1].copy())
        for item in language.questions_for_scene(scene, random.Random(index), 6):
            truth = language.oracle_answer(scene, item.question)
            if truth is None or mirrored is None:
                continue
            assert language.oracle_answer(mirrored, mirror_question(item.question)) == truth, item.question
            checked += 1
    assert checked > 50


@pytest.mark.parametrize("kind, label, flip, caption, expected", [
    ("relation", "yes", "yes", "no", (True, "flip-agrees")),
    ("relation", "yes", "no", "yes", (False, "flip-disagrees")),
    ("count", "two", "two", "two", (True, "views-agree")),
    ("count", "two", "two", "three", (False, "caption-disagrees")),
    ("color", "red", None, "red", (False, "flip-disagrees")),
    ("color", "", "", "", (False, "no-label")),
])
def test_agreement_decision(kind, label, flip, caption, expected):
    assert agreement_decision(kind, label, flip, caption) == expected


def test_audit_rows_by_hand():
    records = [{"kind": "count", "source": "majority", "label_correct": c, "greedy_correct": g}
               for c, g in [(True, True), (True, False), (False, False), (True, True)]]
    records += [{"kind": "count", "source": "agreement-preset", "label_correct": True, "greedy_correct": False}]
    rows = audit_rows(records)
    assert rows == [
        {"kind": "count", "source": "agreement-preset", "items": 1, "label_accuracy": 1.0, "greedy_accuracy": 0.0,
         "gain": 1.0},
        {"kind": "count", "source": "majority", "items": 4, "label_accuracy": 0.75, "greedy_accuracy": 0.5,
         "gain": 0.25}]


def test_parsed_scene_reproduces_rendered_scenes():
    for index in range(100):
        scene = splits.scene_at("unlabeled", index, 3)
        parsed = parser.parsed_scene(render(scene))
        key = sorted((o.shape, o.color, o.cell) for o in scene.objects)
        assert sorted((o.shape, o.color, o.cell) for o in parsed.objects) == key


def _rows(values):
    return [{"arm": arm, "seed": seed, "round": r, "metrics": {"vqa_accuracy": v, "geneval_overall": v}}
            for arm, seed, r, v in values]


def test_ceiling_share_is_the_mean_over_seeds_and_ignores_the_gold_arm():
    rows = _rows([("control", 0, 1, .70), ("control", 1, 1, .72), ("gold-ceiling", 0, 1, .80),
                  ("gold-ceiling", 1, 1, .82), ("agreement", 0, 1, .75), ("agreement", 1, 1, .77)])
    assert ceiling_share(rows, "vqa_accuracy") == pytest.approx({"agreement": 0.5})
    # No headroom: a ceiling at or below the control shares nothing.
    assert ceiling_share(_rows([("control", 0, 1, .7), ("gold-ceiling", 0, 1, .7), ("agreement", 0, 1, .8)]),
                         "vqa_accuracy") == {}


def test_the_share_is_of_the_highest_ceiling_and_the_report_lists_every_arm():
    from tasks.experiment_report import ceiling_section

    rows = _rows([("control", 0, 1, .70), ("gold-ceiling", 0, 1, .74), ("compose-gold-ceiling", 0, 1, .80),
                  ("compose", 0, 1, .78), ("agreement", 0, 1, .72)])
    # compose passes the Proposer-item ceiling (.74) but recovers (.78 - .70) / (.80 - .70) of its own items' ceiling
    assert ceiling_share(rows, "vqa_accuracy") == pytest.approx({"compose": 0.8, "agreement": 0.2})
    lines = ceiling_section(rows)
    assert "| vqa_accuracy | compose-gold-ceiling (0.800) | compose: 80% |" in lines
    assert "| vqa_accuracy | compose-gold-ceiling (0.800) | agreement: 20% |" in lines
    check = [c for c in target_checks(rows) if c.claim.startswith("share of the gold-label ceiling recovered, VQA")]
    assert check[0].measured == pytest.approx(0.8) and check[0].detail == "best arm compose, ceiling compose-gold-ceiling"
    assert ceiling_section(_rows([("control", 0, 1, .7), ("compose", 0, 1, .8)])) == []


def test_target_checks_never_count_the_gold_arm_as_a_method():
    rows = _rows([("control", 0, 0, .70), ("control", 0, 1, .70), ("gold-ceiling", 0, 1, .90),
                  ("agreement", 0, 1, .71)])
    gains = [c for c in target_checks(rows) if c.claim == "VQA gain over the base (points)"]
    assert gains[0].detail == "best arm agreement" and gains[0].measured == pytest.approx(1.0)
