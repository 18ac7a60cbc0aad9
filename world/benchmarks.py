"""Held-out evaluation sets of the embedded world (evaluation only, never training).

Each set is drawn from a held-out split: `eval` for reported numbers, `validation` for choices
(tuning and promotion decisions), so nothing is tuned on what is reported. VQA items come from
the split's scenes; GenEval-2D prompts are balanced over the six
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


HELD_OUT = ("eval", "validation")


def _held_out(split: str) -> str:
    if split not in HELD_OUT:
        raise ValueError(f"held-out sets come from {' or '.join(HELD_OUT)}, not {split!r}")
    return split


def vqa_items(n_scenes: int, seed: int, questions_per_scene: int = 4, split: str = "eval") -> list[HeldOutVQA]:
    items = []
    for index in range(n_scenes):
        scene = splits.scene_at(_held_out(split), index, seed)
        rng = random.Random(f"{split}-vqa:{seed}:{index}")
        for item in language.questions_for_scene(scene, rng, n=questions_per_scene):
            items.append(HeldOutVQA(index, item.question, item.answer, item.family))
    return items


def vqa_images(items: list[HeldOutVQA], seed: int, split: str = "eval") -> dict[int, np.ndarray]:
    return {i: render(splits.scene_at(_held_out(split), i, seed)) for i in sorted({it.image_index for it in items})}


def geneval_prompts(per_category: int, seed: int, split: str = "eval") -> list[language.Prompt]:
    rng = random.Random(f"{_held_out(split)}-geneval:{seed}")
    return [language.sample_prompt(rng, c) for c in language.CATEGORIES for _ in range(per_category)]


def caption_scenes(n: int, seed: int, split: str = "eval") -> list:
    # Indices past the VQA scenes keep the caption set disjoint from them.
    return [splits.scene_at(_held_out(split), 100_000 + i, seed) for i in range(n)]


def proposer_scenes(n: int, seed: int, split: str = "eval") -> list:
    return [splits.scene_at(_held_out(split), 200_000 + i, seed) for i in range(n)]
