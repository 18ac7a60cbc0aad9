"""The labeled seed set: every pretraining example of the embedded world, built from seeds.

Only pretraining reads this module; after pretraining no world label enters training.
Each example is a plain dict with the fields of `models.protocol.TrainingExample`.

    examples = seed_examples(n_scenes=200, seed=0, framings=("canonical", "direct"))
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from world import language, splits
from world.render import render
from world.scenes import COLORS, SHAPES

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
                        "framing": rng.choice(list(framings))})
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
