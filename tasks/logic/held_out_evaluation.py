"""Score any `Backbone` on the embedded world's held-out sets (ground truth, evaluation only).

Metrics: VQA accuracy overall and per question family (the Solver, greedy, canonical
framing); GenEval-2D accuracy per category and overall = mean of the six (the Generator,
several sampled images per prompt, scored by the pixel parser); caption exact-match
accuracy; the share of the Proposer's questions that are well posed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from models.protocol import SolveRequest
from tasks.logic.answers import normalize_answer
from world import benchmarks, language, parser
from world.render import render


@dataclass(frozen=True)
class EvalConfig:
    vqa_scenes: int = 400
    geneval_per_category: int = 40
    samples_per_prompt: int = 4
    caption_scenes: int = 200
    proposer_scenes: int = 200
    seed: int = 0
    temperature: float = 1.0
    split: str = "eval"  # "validation" for choices, "eval" for reported numbers

    @classmethod
    def tiny(cls) -> "EvalConfig":
        return cls(vqa_scenes=10, geneval_per_category=2, samples_per_prompt=2, caption_scenes=5, proposer_scenes=5)


def evaluate_vqa(backbone, config: EvalConfig) -> dict[str, float]:
    items = benchmarks.vqa_items(config.vqa_scenes, config.seed, split=config.split)
    images = benchmarks.vqa_images(items, config.seed, config.split)
    results = backbone.solve([SolveRequest(images[it.image_index], it.question, temperature=0.0) for it in items],
                             seed=config.seed)
    by_family: dict[str, list[bool]] = defaultdict(list)
    for it, res in zip(items, results):
        by_family[it.family].append(normalize_answer(res.text) == it.answer)
    out = {f"vqa_{f}": float(np.mean(v)) for f, v in sorted(by_family.items())}
    out["vqa_accuracy"] = float(np.mean([x for v in by_family.values() for x in v]))
    return out


def evaluate_geneval(backbone, config: EvalConfig) -> dict[str, float]:
    prompts = benchmarks.geneval_prompts(config.geneval_per_category, config.seed, config.split)
    images = backbone.generate_images([p.text for p in prompts], config.samples_per_prompt, config.temperature,
                                      seed=config.seed)
    by_cat: dict[str, list[bool]] = defaultdict(list)
    for p, imgs in zip(prompts, images):
        by_cat[p.category].extend(parser.check_prompt(im, p.text) for im in imgs)
    out = {f"geneval_{c}": float(np.mean(by_cat[c])) for c in language.CATEGORIES}
    out["geneval_overall"] = float(np.mean([out[f"geneval_{c}"] for c in language.CATEGORIES]))
    return out


def evaluate_captions(backbone, config: EvalConfig) -> dict[str, float]:
    scenes = benchmarks.caption_scenes(config.caption_scenes, config.seed, config.split)
    captions = backbone.caption([render(s) for s in scenes])
    return {"caption_accuracy": float(np.mean([c == language.caption(s) for c, s in zip(captions, scenes)]))}


def evaluate_proposer(backbone, config: EvalConfig) -> dict[str, float]:
    scenes = benchmarks.proposer_scenes(config.proposer_scenes, config.seed, config.split)
    outputs = backbone.propose_questions([render(s) for s in scenes], 1, config.temperature, seed=config.seed)
    posed = [language.oracle_answer(s, out[0].split("|")[0].strip()) is not None for s, out in zip(scenes, outputs)]
    return {"proposer_well_posed": float(np.mean(posed))}


def evaluate(backbone, config: EvalConfig) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for part in (evaluate_vqa, evaluate_geneval, evaluate_captions, evaluate_proposer):
        metrics.update(part(backbone, config))
    return metrics
