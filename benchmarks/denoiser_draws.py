"""Benchmark: does an imitation update of a latent Generator need a new (t, noise) draw on every visit?

    .venv/bin/python benchmarks/denoiser_draws.py [--steps 480] [--bases shapes-flow-base shapes-diffusion-base]

For each shipped latent base, side by side in one run: GenEval-2D (validation split, 40 prompts per category,
4 samples each) of the base, then after the matched control's Generator update (its own seed set, the compose
preset's 480 steps, lr 1e-3, batch 64) twice from the same base and batch stream:

- **fixed**: every visit of an example scored on the same draws (`draw` 0, what a policy update uses);
- **per-visit**: the imitation stream as the fine-tune stage builds it (tasks/finetune.py), a new draw per visit.

The fixed draws let the denoiser memorise a prompt's few noise draws (its loss falls while its samples get worse).
Prints a table; writes benchmarks/results/denoiser_draws.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from models.registry import load_backbone
from models.training import TrainConfig, train
from tasks.finetune import _mixed, replay_examples
from tasks.logic.held_out_evaluation import EvalConfig, evaluate_geneval

ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = ("geneval_overall", "geneval_counting", "geneval_position", "geneval_color_attr")


def _update(base: Path, steps: int, lr: float, fixed: bool) -> dict[str, float]:
    backbone = load_backbone(base)
    backbone.attach_roles()
    data = replay_examples(300, 0, "generator")
    stream = _mixed(data, data, 1.0, 64, seed=0)
    if fixed:
        stream = ([dataclasses.replace(e, draw=0) for e in batch] for batch in stream)
    started = time.time()
    losses = train(backbone, "generator", stream, TrainConfig(steps=steps, lr=lr, warmup_steps=min(20, steps // 5)))
    out = {"train_s": time.time() - started, "loss_first": losses[0], "loss_last": sum(losses[-10:]) / 10}
    return out | evaluate_geneval(backbone, EvalConfig(split="validation"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=480)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--bases", nargs="+", default=["shapes-flow-base", "shapes-diffusion-base"])
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    for name in args.bases:
        base = ROOT / "models" / "checkpoints" / name
        rows.append({"base": name, "update": "none"} | evaluate_geneval(load_backbone(base),
                                                                        EvalConfig(split="validation")))
        for fixed in (True, False):
            rows.append({"base": name, "update": "fixed" if fixed else "per-visit"}
                        | _update(base, args.steps, args.lr, fixed))
    print(f"\n{'base':24} {'update':10} " + " ".join(f"{c[8:]:>12}" for c in CATEGORIES) + "   loss first->last")
    for r in rows:
        loss = f"{r['loss_first']:.3f}->{r['loss_last']:.3f}" if "loss_first" in r else ""
        print(f"{r['base']:24} {r['update']:10} " + " ".join(f"{r[c]:12.3f}" for c in CATEGORIES) + f"   {loss}")
    out = ROOT / "benchmarks" / "results" / "denoiser_draws.json"
    out.write_text(json.dumps({"steps": args.steps, "lr": args.lr, "rows": rows}, indent=1))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
