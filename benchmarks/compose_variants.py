"""Benchmark: one round of a preset from the shipped base under config variants, side by side, scored on the
validation split (for choosing a recipe; the eval split is for reported numbers).

    ASG_HOME=/tmp/cv .venv/bin/python benchmarks/compose_variants.py --variants default \
        targeted_categories=color_attr+position+color_attr+counting+color_attr+two_object

A variant is `default` or comma-separated `name=value` changes of the round's config (flat names such as
`targeted_share=1.0` or `n_per_prompt=4`; a tuple field takes its items joined by "+"). Every variant starts
from the same base with the same seed, images and update steps, in its own namespace of one store, so they
differ only by the change. Each variant's held-out metrics and the round's own diagnostics (evaluation only)
print as one line and are appended to benchmarks/results/compose_variants.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results" / "compose_variants.jsonl"
SHOWN = ("vqa_accuracy", "vqa_relation", "geneval_overall", "geneval_counting", "geneval_position",
         "geneval_color_attr", "proposer_well_posed")


def changes_of(variant: str, config) -> dict:
    """`name=value,...` as typed changes of `config` (tuple fields split on "+"); `default` is no change."""
    if variant == "default":
        return {}
    changes = {}
    for part in variant.split(","):
        name, _, value = part.partition("=")
        if not value:
            raise SystemExit(f"variant {variant!r}: {part!r} is not name=value")
        try:
            changes[name] = json.loads(value)
        except json.JSONDecodeError:
            changes[name] = tuple(value.split("+")) if "+" in value else value
        if isinstance(changes[name], str) and name.endswith("categories"):
            changes[name] = (changes[name],)
    try:
        config.updated(**changes)
    except ValueError as error:
        raise SystemExit(f"variant {variant!r}: {str(error).splitlines()[-1].strip()}")
    return changes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=["default"])
    ap.add_argument("--preset", default="compose")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--split", default="validation", choices=("validation", "eval"))
    ap.add_argument("--checkpoint", default=str(ROOT / "models" / "checkpoints" / "shapes-base"))
    args = ap.parse_args()

    from flows.round import RoundConfig, round_flow

    # The size `asg experiment --rounds 1` gives its arms: the same images, seed and steps as the runs.
    config = RoundConfig(source=f"world://unlabeled?n={args.images}&seed={100 + args.seed}", n_images=args.images,
                         preset=args.preset, seed=args.seed, eval_split=args.split)
    plans = [(variant, changes_of(variant, config)) for variant in args.variants]
    print(f"{'variant':<60} " + " ".join(f"{m.removeprefix('geneval_').removeprefix('vqa_'):>11}" for m in SHOWN))
    for variant, changes in plans:
        started = time.monotonic()
        namespace = "v-" + "".join(ch if ch.isalnum() else "-" for ch in variant)[:60]
        out = round_flow(0, args.checkpoint, config.updated(**changes), "asg-compose-variants", namespace=namespace)
        metrics = {k.removeprefix("evaluate."): v for k, v in out.items() if k.startswith("evaluate.")}
        diagnostics = {k.removeprefix("diagnose."): v for k, v in out.items() if k.startswith("diagnose.")}
        row = {"variant": variant, "preset": args.preset, "seed": args.seed, "images": args.images,
               "split": args.split, "minutes": round((time.monotonic() - started) / 60, 1), "metrics": metrics,
               "diagnostics": diagnostics}
        with RESULTS.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{variant[:60]:<60} " + " ".join(f"{metrics.get(m, float('nan')):>11.3f}" for m in SHOWN), flush=True)


if __name__ == "__main__":
    main()
