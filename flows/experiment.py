"""The evidence experiment: converged base vs matched control vs self-evolution (paper-faithful and
verified presets) over R rounds and several seeds, plus the ablations; writes a Markdown report with
plots and logs every round to MLflow (experiment "asg-experiment").

    asg experiment            # default size: 3 rounds, seeds 0 1 2, five ablations (62 minutes here)
    asg experiment --quick    # a structure check for CI: 1 round, tiny sizes
"""

from __future__ import annotations

import time

from prefect import flow

from flows.round import RoundConfig, round_flow
from flows.tracking import Tracker
from storage.checkpoints import checkpoint_uri
from storage.settings import Settings
from tasks.control import control_finetune
from tasks.evaluate import evaluate_checkpoint
from tasks.experiment_report import write_experiment_report
from tasks.stage_cache import inputs_key, refreshing_cache
from tasks.logic.presets import scaled_steps

ABLATIONS = {
    "paper/ste-off": {"use_ste": False},
    "paper/cycle-off": {"use_cycle": False},
    "paper/fidelity-off": {"use_fidelity": False},
    "paper/understanding-only": {"mode": "understanding"},
    "paper/generation-only": {"mode": "generation"},
}


# Arms besides the matched control: every preset; the "*gold-ceiling" arms are ceilings, not methods.
PRESET_ARMS = ("paper", "verified", "agreement", "compose", "gold-ceiling", "compose-gold-ceiling")


def _size(quick: bool, seed: int, rounds: int, split: str = "eval", images: int = 1000,
          steps_scale: float = 4.0) -> RoundConfig:
    if quick:
        return RoundConfig(source=f"world://unlabeled?n={24 * rounds}&seed={100 + seed}", n_images=24,
                           n_samples=3, n_per_prompt=2, n_check_answers=2, batch_size=8, evaluation="tiny",
                           finetune_steps={"solver": 3, "proposer": 2, "generator": 3}, seed=seed,
                           eval_split=split)
    steps = scaled_steps(steps_scale)  # every arm and the matched control take the same steps
    return RoundConfig(source=f"world://unlabeled?n={images * rounds}&seed={100 + seed}", n_images=images,
                       finetune_steps=steps, seed=seed, eval_split=split)


@flow(name="asg-experiment", log_prints=True)
def experiment_flow(base_checkpoint: str, rounds: int = 3, seeds: tuple[int, ...] = (0, 1, 2),
                    ablations: bool = True, quick: bool = False, presets: tuple[str, ...] = PRESET_ARMS,
                    split: str = "eval", images: int = 1000, steps_scale: float = 4.0) -> str:
    """`split` "validation" for choosing between recipes, "eval" (default) for the numbers reported; `images`
    per round and `steps_scale` (update steps of every role, the matched control's too) raise the ceiling."""
    unknown = [p for p in presets if p not in PRESET_ARMS]
    if unknown:
        raise ValueError(f"unknown preset arm {unknown[0]!r}; arms are {', '.join(PRESET_ARMS)}")
    settings = Settings.from_env()
    tracker = Tracker(settings.mlflow_uri, "asg-experiment")
    results: list[dict] = []
    eval_config = _size(quick, 0, rounds, split, images, steps_scale).eval_config()
    base = evaluate_checkpoint(base_checkpoint, -1, eval_config).metrics
    arms = [(arm, seed, overrides) for seed in seeds
            for arm, overrides in (("control", None), *((p, {"preset": p}) for p in presets))]
    if ablations:
        arms += [(arm, seeds[0], overrides) for arm, overrides in ABLATIONS.items()]
    started = time.monotonic()
    report = ""
    for done, (arm, seed, overrides) in enumerate(arms):
        results.append({"arm": arm, "seed": seed, "round": 0, "metrics": base})
        config = _size(quick, seed, rounds, split, images, steps_scale)
        namespace = f"{arm}-seed{seed}".replace("/", "-")  # the arm's own tables and checkpoints in the store
        checkpoint = base_checkpoint
        for r in range(rounds):
            if overrides is None:
                output = checkpoint_uri(settings.within(namespace), f"control-{r}")
                control_finetune(r, checkpoint, output, config.finetune.steps, config.finetune.lr,
                                 config.finetune.batch_size, config.finetune.seed_scenes, seed,
                                 config.finetune.seed_set_seed, namespace=namespace)
                metrics = evaluate_checkpoint(output, r, eval_config, namespace=namespace).metrics
                key = inputs_key({"arm": arm, "seed": seed, "round": r, "checkpoint": checkpoint,
                                  "config": config})
                with tracker.run(f"{arm}-seed{seed}-round-{r}", tags={"arm": arm, "seed": str(seed)},
                                 resume_key=key, fresh=refreshing_cache()):
                    tracker.log_metrics(metrics, step=r, prefix="evaluate.")
                diagnostics = {}
            else:
                out = round_flow(r, checkpoint, config.model_copy(update=overrides), "asg-experiment",
                                 run_prefix=f"{arm}-seed{seed}-", namespace=namespace)
                output = out["checkpoint"]
                metrics = {k.removeprefix("evaluate."): v for k, v in out.items() if k.startswith("evaluate.")}
                diagnostics = {k.removeprefix("diagnose."): v for k, v in out.items() if k.startswith("diagnose.")}
            results.append({"arm": arm, "seed": seed, "round": r + 1, "metrics": metrics,
                            "diagnostics": diagnostics})
            checkpoint = output
        # Rewritten after every arm, so an interrupted experiment still leaves the arms it finished.
        minutes = (time.monotonic() - started) / 60
        progress = "" if done + 1 == len(arms) else f"; partial: {done + 1} of {len(arms)} arms"
        report = write_experiment_report(results, str(settings.home / "experiment"),
                                         f"asg experiment ({rounds} rounds, seeds {list(seeds)}, {split} split; "
                                         f"{minutes:.0f} min{progress})")
    report_key = inputs_key({"report": [rounds, list(seeds), ablations, quick, list(presets), split, images,
                                        steps_scale, base_checkpoint]})
    with tracker.run("report", resume_key=report_key, fresh=refreshing_cache()):
        tracker.log_artifacts(str(settings.home / "experiment"), "report")
    print(f"report: {report}")
    return report
