"""The labeled seed set: every pretraining example of the embedded world, built from seeds.

Only pretraining reads this module; after pretraining no world label enters training.
Each example is a plain dict with the fields of `models.protocol.TrainingExample`.

    examples = seed_examples(n_scenes=200, seed=0, framings=("canonical", "direct"))
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from world import language, questions, splits
from world.render import render
from world.scenes import COLORS, GRID, SHAPES, Scene

_ALTERNATIVES = {
    "color": tuple(COLORS), "shape": SHAPES, "count": language.NUMBER_WORDS[:5],
    "exist": ("yes", "no"), "relation": ("yes", "no"),
}


def validator_target(question: str, answer: str, family: str, rng: random.Random) -> str:
    """The Proposer's structured output: the question plus two plausible answers, one true."""
    distractor = rng.choice([a for a in _ALTERNATIVES[family] if a != answer])
    pair = [answer, distractor]
    rng.shuffle(pair)
    return f"{question} | {pair[0]} | {pair[1]}"


def spec_target(prompt: str) -> str:
    """The Proposer's text-to-image spec: the prompt and the checks it implies."""
    checks = language.checks_for_prompt(prompt)
    return " | ".join([prompt] + [f"{q} = {a}" for q, a in checks])


def reading_hints(scene: Scene, question: str) -> dict:
    """A labeled VQA example's `steps` and `attend` (models.protocol.TrainingExample): the cells of the objects
    the question names (relation and colour questions), and for a relation question those objects' indices on its
    axis as number words ("one three": columns for left/right, rows for above/below). Empty for other questions."""
    objects = questions.named_objects(scene, question)
    hints: dict = {"attend": tuple(obj.row * GRID + obj.col for obj in objects)} if objects else {}
    parsed = questions.parse_question(question)
    if objects and parsed.family == "relation":
        on_axis = (lambda o: o.col) if parsed.relation in ("left of", "right of") else (lambda o: o.row)
        hints["steps"] = " ".join(language.NUMBER_WORDS[on_axis(obj)] for obj in objects)
    return hints


def relation_reading_examples(n_scenes: int, seed: int) -> list[dict]:
    """Extra labeled VQA items of the first `n_scenes` seed scenes for a base that reads relations, with their
    `steps` and `attend`: for each object one description picks out, "the <object> left of" -> its column and
    "the <object> above" -> its row as number words (locating one object), and every well-posed relation question
    between two such objects (the seed questions hold about 1.3 per scene; this about 12)."""
    out: list[dict] = []
    for index in range(n_scenes):
        scene = splits.scene_at("seed", index, seed)
        rng = random.Random(f"relation-reading:{seed}:{index}")
        image = render(scene)
        named = [(obj, rng.choice(refs).text) for obj in scene.objects if (refs := questions.referents_for(scene, obj))]
        for obj, name in named:
            for prompt, on_axis in ((f"the {name} left of", obj.col), (f"the {name} above", obj.row)):
                out.append({"kind": "vqa", "image": image, "prompt": prompt, "target": language.NUMBER_WORDS[on_axis],
                            "attend": (obj.row * GRID + obj.col,)})
        for a, name_a in named:
            for b, name_b in named:
                for relation in language.RELATIONS if a is not b else ():
                    question = f"is the {name_a} {relation} the {name_b} ?"
                    answer = questions.oracle_answer(scene, question)
                    if answer is not None:
                        out.append({"kind": "vqa", "image": image, "prompt": question, "target": answer,
                                    **reading_hints(scene, question)})
    return out


def seed_examples(n_scenes: int, seed: int, framings: Sequence[str], t2i_per_scene: int = 1) -> list[dict]:
    """All labeled examples of the first `n_scenes` seed scenes, deterministic in `seed`."""
    out: list[dict] = []
    for index in range(n_scenes):
        scene = splits.scene_at("seed", index, seed)
        rng = random.Random(f"seed-examples:{seed}:{index}")
        image = render(scene)
        items = language.questions_for_scene(scene, rng)
        for item in items:
            out.append({"kind": "vqa", "image": image, "prompt": item.question, "target": item.answer,
                        "framing": rng.choice(list(framings)), **reading_hints(scene, item.question)})
            out.append({"kind": "ask", "image": image,
                        "target": validator_target(item.question, item.answer, item.family, rng)})
        out.append({"kind": "caption", "image": image, "target": language.caption(scene)})
        out.append({"kind": "t2i", "prompt": language.caption(scene), "target_image": image})
        prompt = language.prompt_for_scene(scene, rng)
        if prompt is not None:
            out.append({"kind": "spec", "image": image, "target": spec_target(prompt.text)})
        for _ in range(t2i_per_scene):
            p = language.sample_prompt(rng)
            out.append({"kind": "t2i", "prompt": p.text, "target_image": render(language.scene_for_prompt(p, rng))})
    return out
