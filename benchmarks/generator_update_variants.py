"""Benchmark: the Generator's imitation update on one stored round's examples, from the same base, under config
variants side by side, scored by GenEval-2D on the validation split (evaluation only).

    ASG_HOME=/tmp/r-flow .venv/bin/asg round --round-idx 0 --checkpoint models/checkpoints/shapes-flow-base
    .venv/bin/python benchmarks/generator_update_variants.py --home /tmp/r-flow \
        --checkpoint models/checkpoints/shapes-flow-base --variants default update_cfg_drop=0

A variant is `default` or comma-separated `field=value` overrides of the backbone's config (for example
`update_cfg_drop=0`, `guidance_scale=2`) or of the fine-tune section (`lr`, `replay_fraction`, `batch_size`), or
`steps=N` (`steps=0`: no update, the base itself), or `update=preference` with `beta`, `sft_weight`, `pair_batch`
(models/preference_training.py: Diffusion-DPO on pairs of one spec's samples the model's tile reading matched and
did not match, tasks/logic/preference_pairs.py, instead of imitating the matched ones); every variant trains the same examples with the same seed, and
whatever it does not override as the round's fine-tune stage does. `--eval-guidance 1 2 4` scores each update at
several classifier-free guidance scales (an imitation of guided samples distils guidance into the conditional
branch, so the scale to sample it at may change). Each line printed is one variant at one scale; all are
written to benchmarks/results/generator_update_variants.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def overrides(variant: str, *configs) -> list[dict]:
    """`field=value,...` split by which of `configs` has the field, typed like it ("0"/"1" for booleans)."""
    out: list[dict] = [{} for _ in configs]
    if variant == "default":
        return out
    for part in variant.split(","):
        name, _, value = part.partition("=")
        owner = next((k for k, c in enumerate(configs) if hasattr(c, name)), None)
        if owner is None:
            raise SystemExit(f"unknown field {name!r} in variant {variant!r}")
        kind = type(getattr(configs[owner], name))
        out[owner][name] = value in ("1", "true", "True") if kind is bool else kind(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", required=True, help="ASG_HOME of a finished round (its training_examples)")
    ap.add_argument("--checkpoint", required=True, help="the base the round started from")
    ap.add_argument("--round-idx", type=int, default=0)
    ap.add_argument("--steps", type=int, default=480)
    ap.add_argument("--variants", nargs="+", default=["default", "update_cfg_drop=0"])
    ap.add_argument("--eval-guidance", nargs="*", type=float, default=None,
                    help="score each variant's update at each of these guidance scales (latent generators; "
                         "`steps=0` scores the base itself)")
    args = ap.parse_args()
    os.environ["ASG_HOME"] = args.home

    from models.registry import load_backbone
    from storage.settings import Settings
    from storage.tables import connect
    from models.preference_training import PreferenceConfig, preference_update
    from tasks.finetune import StoredPairs, imitate_role, replay_examples, stored_examples, stored_pair_ids
    from tasks.logic.held_out_evaluation import EvalConfig, evaluate_geneval
    from tasks.logic.stage_configs import FinetuneConfig

    db = connect(Settings.from_env())
    own = stored_examples(db, args.round_idx, "generator")
    if not own:
        raise SystemExit(f"round {args.round_idx} in {args.home} has no generator examples")
    ft = FinetuneConfig()
    replay = replay_examples(ft.seed_scenes, ft.seed_set_seed, "generator")
    # The round's preference pairs as the fine-tune stage reads them: ids here, images a window of steps at a time.
    pairs = StoredPairs(db, stored_pair_ids(db, args.round_idx, seed=args.round_idx))
    preference = PreferenceConfig(reference=ft.preference_reference)  # as the fine-tune stage sets it
    rows = []
    for variant in args.variants:
        backbone = load_backbone(args.checkpoint)
        # `steps` first: FinetuneConfig has a `steps` field too (per role), which this script's `steps=N` is not
        run, model, tune, pref = overrides(variant, argparse.Namespace(steps=args.steps, update="imitation",
                                                                        pair_batch=16),
                                           backbone.config, ft, preference)
        backbone.config = dataclasses.replace(backbone.config, **model)
        tune, steps = ft.model_copy(update=tune), run.get("steps", args.steps)
        backbone.attach_roles()
        clock = time.perf_counter()
        if steps > 0 and run.get("update") == "preference":
            config = dataclasses.replace(preference, steps=steps, lr=tune.lr, seed=1234, **pref)
            stats = preference_update(backbone, "generator", pairs, run.get("pair_batch", 16), config)
            tail = stats[-20:]
            losses = {"generator_loss_first": stats[0].loss,
                      "generator_loss_last": sum(s.loss for s in tail) / len(tail),
                      "pair_accuracy_last": sum(s.accuracy for s in tail) / len(tail),
                      "pair_margin_last": sum(s.margin for s in tail) / len(tail)}
        else:
            losses = imitate_role(backbone, "generator", own, steps, tune.lr, tune.batch_size,
                                  tune.replay_fraction, replay, seed=1234) if steps > 0 else {}
        trained = round(time.perf_counter() - clock, 1)
        # Guidance only changes sampling: one update, scored at every scale asked for (the variant's own by default).
        for scale in args.eval_guidance or [getattr(backbone.config, "guidance_scale", None)]:
            if scale is not None:
                backbone.config = dataclasses.replace(backbone.config, guidance_scale=scale)
            scores = evaluate_geneval(backbone, EvalConfig(split="validation"))
            rows.append({"variant": variant, "examples": len(own), "steps": steps, "guidance_scale": scale,
                         "train_seconds": trained, "seconds": round(time.perf_counter() - clock, 1), **losses,
                         **{k: round(v, 4) for k, v in scores.items()}})
            print(json.dumps(rows[-1]), flush=True)
    out = ROOT / "benchmarks" / "results" / "generator_update_variants.json"
    out.write_text(json.dumps(rows, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
