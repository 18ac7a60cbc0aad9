"""Held-out evaluation sets of the embedded world (evaluation only, never training).

VQA items come from `eval` split scenes; GenEval-2D prompts are balanced over the six
categories, like GenEval's own metadata.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from world import language, splits
from world.render import render


@dataclass(frozen=True)
class HeldOutVQA:
    image_index: int
    question: str
    answer: str
    family: str


def vqa_items(n_scenes: int, seed: int, questions_per_scene: int = 4) -> list[HeldOutVQA]:
    items = []
    for index in range(n_scenes):
        scene = splits.scene_at("eval", index, seed)
        rng = random.Random(f"eval-vqa:{seed}:{index}")
        for item in language.questions_for_scene(scene, rng, n=questions_per_scene):
            items.append(HeldOutVQA(index, item.question, item.answer, item.family))
    return items


def vqa_images(items: list[HeldOutVQA], seed: int) -> dict[int, np.ndarray]:
    return {i: render(splits.scene_at("eval", i, seed)) for i in sorted({it.image_index for it in items})}


def geneval_prompts(per_category: int, seed: int) -> list[language.Prompt]:
    rng = random.Random(f"eval-geneval:{seed}")
    return [language.sample_prompt(rng, c) for c in language.CATEGORIES for _ in range(per_category)]


def caption_scenes(n: int, seed: int) -> list:
    # Indices past the VQA scenes keep the caption set disjoint from them.
    return [splits.scene_at("eval", 100_000 + i, seed) for i in range(n)]
