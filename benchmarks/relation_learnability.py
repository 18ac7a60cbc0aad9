"""Can the embedded base learn relations at all? Trains on many *true* relation labels and measures held-out relation VQA.

A diagnostic of the model, not a method: the labels come from the world's hidden scenes of the unlabeled split
(what no training decision of a round may see), so this bounds what any label source could teach relations
through this base. It trains either the Solver's LoRA adapter (`lora`) or every weight of the base (`full`) on
relation questions only (`rel`) or on every family (`all`), then evaluates VQA on the validation split.

    .venv/bin/python benchmarks/relation_learnability.py lora 12000 1500 1e-3 rel
    .venv/bin/python benchmarks/relation_learnability.py full 12000 1500 3e-3 rel

Each run prints one JSON line (and appends it to benchmarks/results/relation_learnability.jsonl): the training
loss at the start and over the last 20 steps, and VQA by family before and after. The loss is the mean over the
answer token and the end-of-answer token, so a yes/no answer at chance shows as about ln(2)/2 = 0.35.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.protocol import TrainingExample  # noqa: E402
from models.registry import load_backbone  # noqa: E402
from models.training import TrainConfig, train  # noqa: E402
from world import questions, splits  # noqa: E402
from tasks.logic.held_out_evaluation import EvalConfig, evaluate_vqa  # noqa: E402
from world.render import render  # noqa: E402

BASE = ROOT / "models" / "checkpoints" / "shapes-base"


def true_label_examples(n_scenes: int, relation_only: bool) -> list[TrainingExample]:
    rng = random.Random(0)
    out = []
    for i in range(n_scenes):
        scene = splits.scene_at("unlabeled", i, 0)
        image = render(scene)
        for item in questions.questions_for_scene(scene, rng, n=8):
            if not relation_only or item.family == "relation":
                out.append(TrainingExample("vqa", image=image, prompt=item.question, target=item.answer))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["lora", "full"])
    parser.add_argument("scenes", type=int)
    parser.add_argument("steps", type=int)
    parser.add_argument("lr", type=float)
    parser.add_argument("families", choices=["rel", "all"])
    parser.add_argument("--checkpoint", default=str(BASE))
    args = parser.parse_args()
    torch.set_num_threads(2)
    backbone = load_backbone(args.checkpoint)
    examples = true_label_examples(args.scenes, args.families == "rel")
    print(f"{len(examples)} training examples from {args.scenes} scenes", flush=True)
    config = EvalConfig(split="validation", vqa_scenes=300)
    before = evaluate_vqa(backbone, config)
    role = None
    if args.mode == "lora":
        backbone.attach_roles()
        role = "solver"

    def batches():
        rng = random.Random(1)
        while True:
            yield [rng.choice(examples) for _ in range(64)]

    start = time.time()
    with backbone.role(role) if role else contextlib.nullcontext():
        losses = train(backbone, role, batches(), TrainConfig(steps=args.steps, lr=args.lr, warmup_steps=20))
        after = evaluate_vqa(backbone, config)
    row = dict(mode=args.mode, scenes=args.scenes, examples=len(examples), steps=args.steps, lr=args.lr,
               families=args.families, loss_first=round(losses[0], 4), loss_last20=round(float(np.mean(losses[-20:])), 4),
               before={k: round(v, 3) for k, v in before.items()}, after={k: round(v, 3) for k, v in after.items()},
               train_s=round(time.time() - start))
    print(json.dumps(row), flush=True)
    with (ROOT / "benchmarks" / "results" / "relation_learnability.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
