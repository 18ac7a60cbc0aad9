"""Behaviour tests of the embedded shapes world: scenes, rendering, codebook, language, parser, splits."""
import random
from collections import Counter

import numpy as np
import pytest

from world.codebook import N_CODES, TOKENS_PER_IMAGE, decode, encode
from world.language import (CATEGORIES, FAMILIES, WORDS, caption, checks_for_prompt, oracle_answer,
                            prompt_for_scene, question_family, questions_for_scene, sample_prompt, scene_for_prompt)
from world.parser import check_prompt, parse, parsed_caption
from world.render import render
from world.scenes import COLORS, Scene, SceneObject, sample_scene
from world.splits import parse_source_uri, scene_at, scenes, source_uri

PALETTE = {(0, 0, 0)} | set(COLORS.values())


@pytest.fixture(scope="module")
def random_scenes() -> list[Scene]:
    rng = random.Random(1234)
    return [sample_scene(rng) for _ in range(2000)]


def test_constants_and_validation():
    assert list(COLORS) == ["red", "green", "blue", "yellow", "purple", "cyan"]
    assert COLORS["blue"] == (40, 70, 240)
    with pytest.raises(ValueError):
        SceneObject("square", "red", 7, 0, 1, 0)  # a 7 px box has no room for jitter


def test_scene_dict_round_trip(random_scenes):
    for scene in random_scenes[:50]:
        assert Scene.from_dict(scene.to_dict()) == scene


def test_render_uses_exact_palette_and_shapes():
    scene = Scene((SceneObject("square", "red", 5, 0, 1, 2), SceneObject("triangle", "cyan", 7, 15, 0, 0)))
    image = render(scene)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert {tuple(p) for p in image.reshape(-1, 3)} == {(0, 0, 0), (230, 30, 30), (30, 220, 230)}
    assert (image[2:7, 1:6] == (230, 30, 30)).all() and (image[0:2, :8] == 0).all()
    # Triangle in cell 15: apex single pixel at top-centre, full 7 px base on the bottom row.
    assert (image[24, 24:31] != 0).any(axis=1).tolist() == [False, False, False, True, False, False, False]
    assert (image[30, 24:31] == (30, 220, 230)).all()


def test_render_pixels_are_palette_only(random_scenes):
    for scene in random_scenes[:300]:
        assert {tuple(p) for p in render(scene).reshape(-1, 3)} <= PALETTE


def test_codebook_round_trips_random_scenes(random_scenes):
    assert N_CODES == 253 and TOKENS_PER_IMAGE == 16
    assert decode([0] * 16).sum() == 0
    for scene in random_scenes:
        image = render(scene)
        codes = encode(image)
        assert len(codes) == 16 and all(0 <= c < N_CODES for c in codes)
        assert np.array_equal(decode(codes), image)


def test_codebook_nearest_for_foreign_images_and_rejects_bad_codes():
    image = render(Scene((SceneObject("circle", "green", 6, 5, 1, 1),)))
    noisy = np.clip(image.astype(int) + np.random.default_rng(0).integers(-20, 21, image.shape), 0, 255).astype(np.uint8)
    assert np.array_equal(decode(encode(noisy)), image)
    with pytest.raises(ValueError, match="253"):
        decode([253] + [0] * 15)


def test_parser_is_exact_on_renders(random_scenes):
    for scene in random_scenes:
        parsed = parse(render(scene))
        assert parsed.n_malformed == 0
        got = Counter((o.shape, o.color) for o in parsed.objects)
        assert got == Counter((o.shape, o.color) for o in scene.objects)
        assert parsed_caption(render(scene)) == caption(scene)


@pytest.mark.parametrize("category", CATEGORIES)
def test_check_prompt_accepts_scenes_for_prompts(category):
    rng = random.Random(category)
    for _ in range(300):
        prompt = sample_prompt(rng, category)
        assert prompt.category == category
        assert check_prompt(render(scene_for_prompt(prompt, rng)), prompt.text), prompt.text


def test_check_prompt_rejects_empty_extra_and_wrong_relation():
    empty = np.zeros((32, 32, 3), dtype=np.uint8)
    assert not check_prompt(empty, "a circle")
    circle = SceneObject("circle", "red", 5, 0, 0, 0)
    square = SceneObject("square", "blue", 6, 3, 0, 0)
    assert check_prompt(render(Scene((circle, square))), "a circle left of a square")
    assert check_prompt(render(Scene((circle, square))), "a red circle and a blue square")
    assert not check_prompt(render(Scene((circle, square))), "a circle right of a square")
    assert not check_prompt(render(Scene((circle, square))), "a circle above a square")  # same row
    extra = Scene((circle, square, SceneObject("triangle", "green", 5, 10, 0, 0)))
    assert not check_prompt(render(extra), "a circle and a square")
    smudge = render(Scene((circle,)))
    smudge[20:22, 20:22] = COLORS["red"]
    assert not check_prompt(smudge, "a circle")
    assert parse(smudge).n_malformed == 1


def test_prompt_for_scene_is_satisfied(random_scenes):
    rng = random.Random(7)
    seen = set()
    for scene in random_scenes[:500]:
        prompt = prompt_for_scene(scene, rng)
        if prompt is not None:
            seen.add(prompt.category)
            assert check_prompt(render(scene), prompt.text), prompt.text
    assert seen == set(CATEGORIES)
    four = Scene(tuple(SceneObject(s, "red", 5, c, 0, 0) for s, c in zip(("circle", "square", "triangle", "circle"), (0, 1, 2, 3))))
    assert prompt_for_scene(four, rng) is None


def test_questions_agree_with_oracle(random_scenes):
    rng = random.Random(3)
    families = Counter()
    for scene in random_scenes[:500]:
        items = questions_for_scene(scene, rng)
        assert len({i.question for i in items}) == len(items) and 4 <= len(items) <= 10
        for item in items:
            assert item.question.endswith(" ?")
            assert oracle_answer(scene, item.question) == item.answer is not None
            assert question_family(item.question) == item.family
            families[item.family] += 1
    assert set(families) == set(FAMILIES)
    assert len(questions_for_scene(random_scenes[0], rng, n=3)) == 3


def test_oracle_answers_and_ill_posed_questions():
    scene = Scene((SceneObject("square", "red", 5, 0, 0, 0), SceneObject("square", "blue", 5, 5, 0, 0),
                   SceneObject("circle", "green", 6, 4, 1, 1)))
    assert oracle_answer(scene, "what color is the square ?") is None
    assert oracle_answer(scene, "what color is the circle ?") == "green"
    assert oracle_answer(scene, "what shape is the blue object ?") == "square"
    assert oracle_answer(scene, "how many squares are there ?") == "two"
    assert oracle_answer(scene, "how many purple objects are there ?") == "zero"
    assert oracle_answer(scene, "is there a green triangle ?") == "no"
    assert oracle_answer(scene, "is the red square above the green circle ?") == "yes"
    assert oracle_answer(scene, "is the blue square right of the circle ?") == "yes"
    assert oracle_answer(scene, "is the red square left of the green circle ?") is None  # same column
    assert oracle_answer(scene, "is the square left of the circle ?") is None  # two squares
    assert oracle_answer(scene, "what is this ?") is None
    assert question_family("how many objects are there ?") == "count"


def test_caption_of_hand_built_scene():
    scene = Scene((SceneObject("square", "green", 5, 0, 0, 0), SceneObject("triangle", "red", 5, 1, 0, 0),
                   SceneObject("square", "green", 5, 2, 0, 0), SceneObject("circle", "cyan", 5, 3, 0, 0),
                   ))
    assert caption(scene) == "one cyan circle and two green squares and one red triangle"


def test_checks_for_prompt():
    assert checks_for_prompt("a red circle and a blue square") == [
        ("how many objects are there ?", "two"), ("what color is the circle ?", "red"),
        ("what color is the square ?", "blue")]
    assert checks_for_prompt("a circle left of a square") == [
        ("how many objects are there ?", "two"), ("is the circle left of the square ?", "yes"),
        ("is the square left of the circle ?", "no")]
    assert checks_for_prompt("three triangles") == [
        ("how many objects are there ?", "three"), ("how many triangles are there ?", "three")]
    for bad in ("a circle and a circle", "five circles", "a red circle left of a square", "hello"):
        with pytest.raises(ValueError, match=bad):
            checks_for_prompt(bad)


def test_checks_hold_on_scenes_for_prompts():
    rng = random.Random(11)
    for _ in range(300):
        prompt = sample_prompt(rng)
        scene = scene_for_prompt(prompt, rng)
        checks = checks_for_prompt(prompt.text)
        assert 2 <= len(checks) <= 3
        for question, expected in checks:
            assert oracle_answer(scene, question) == expected, (prompt, question)


def test_every_produced_word_is_in_words(random_scenes):
    rng = random.Random(5)
    assert list(WORDS) == sorted(set(WORDS)) and "?" in WORDS
    texts = []
    for scene in random_scenes[:300]:
        texts.append(caption(scene))
        for item in questions_for_scene(scene, rng, n=20):
            texts += [item.question, item.answer]
    for _ in range(300):
        prompt = sample_prompt(rng)
        texts.append(prompt.text)
        for q, a in checks_for_prompt(prompt.text):
            texts += [q, a]
    texts.append(parsed_caption(np.zeros((32, 32, 3), dtype=np.uint8)))
    assert {w for t in texts for w in t.split()} <= set(WORDS)


def test_splits_are_deterministic_and_distinct():
    assert scene_at("seed", 3) == scene_at("seed", 3)
    assert scenes("eval", 3, start=2)[0] == scene_at("eval", 2)
    streams = [scenes(s, 20) for s in ("seed", "unlabeled", "validation", "eval")]
    assert len({tuple(map(repr, s)) for s in streams}) == 4
    assert scenes("seed", 20, seed=1) != streams[0]
    with pytest.raises(ValueError):
        scene_at("train", 0)


def test_source_uri_round_trip():
    assert source_uri("eval", 12, 3) == "world://eval/3/12"
    assert parse_source_uri(source_uri("unlabeled", 7, 0)) == ("unlabeled", 7, 0)
    for bad in ("world://train/0/1", "http://x", "world://eval/a/1", ""):
        with pytest.raises(ValueError):
            parse_source_uri(bad)


def test_validation_sets_are_disjoint_from_the_reported_eval_sets():
    from world import benchmarks

    for split in ("eval", "validation"):
        assert benchmarks.vqa_items(5, 0, split=split) == benchmarks.vqa_items(5, 0, split=split)
    eval_q = {(it.question, it.answer) for it in benchmarks.vqa_items(50, 0)}
    val_images = benchmarks.vqa_images(benchmarks.vqa_items(50, 0, split="validation"), 0, "validation")
    eval_images = benchmarks.vqa_images(benchmarks.vqa_items(50, 0), 0)
    assert not any(np.array_equal(val_images[i], eval_images[i]) for i in val_images)
    assert eval_q != {(it.question, it.answer) for it in benchmarks.vqa_items(50, 0, split="validation")}
    assert ([p.text for p in benchmarks.geneval_prompts(5, 0, "validation")]
            != [p.text for p in benchmarks.geneval_prompts(5, 0)])
    with pytest.raises(ValueError, match="held-out sets come from eval or validation, not 'seed'"):
        benchmarks.vqa_items(1, 0, split="seed")
