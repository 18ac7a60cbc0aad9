"""The pretraining flow: train the base on the labeled seed set and prove it converged.

    asg pretrain --out models/checkpoints/shapes-base

Logs the loss and learning-rate curves, periodic validation VQA, the held-out evaluation
and the matched-control delta to MLflow (experiment "asg-pretrain").
"""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow

from flows.tracking import Tracker
from models.training import TrainConfig
from storage.settings import Settings
from tasks.pretrain import check_convergence, pretrain_base, write_checkpoint_card
from tasks.logic.held_out_evaluation import EvalConfig
from tasks.logic.pretrain_mix import format_mix


@flow(name="asg-pretrain", log_prints=True)
def pretrain_flow(checkpoint_uri: str, backbone: str = "shapes", size: str = "default", seed_scenes: int = 300,
                  steps: int = 5000, lr: float = 3e-3, batch_size: int = 64, seed: int = 0,
                  control_steps: int = 310, control_lr: float = 1e-3, eval_size: str = "default",
                  init_from: str | None = None, t2i_per_scene: int = 1, relation_reading: bool = False,
                  mix: dict[str, float] | None = None) -> dict:
    settings = Settings.from_env()
    tracker = Tracker(settings.mlflow_uri, "asg-pretrain")
    schedule = TrainConfig(steps=steps, lr=lr, warmup_steps=min(100, steps // 10), seed=seed)
    eval_config = EvalConfig.tiny() if eval_size == "tiny" else EvalConfig(seed=seed)
    with tracker.run(f"pretrain-{backbone}-seed{seed}"):
        tracker.log_params({"backbone": backbone, "size": size, "seed_scenes": seed_scenes, "batch_size": batch_size,
                            "control_steps": control_steps, "control_lr": control_lr, "init_from": init_from,
                            "t2i_per_scene": t2i_per_scene, "relation_reading": relation_reading,
                            "mix": format_mix(mix) if mix else "default", **asdict(schedule)})
        result = pretrain_base(backbone, size, seed_scenes, schedule, batch_size, checkpoint_uri, eval_config,
                               t2i_per_scene=t2i_per_scene, init_from=init_from, relation_reading=relation_reading,
                               mix=mix)
        tracker.log_series("train_loss", result.losses)
        tracker.log_series("learning_rate", result.lrs)
        for step, acc in result.validation:
            tracker.log_metrics({f"validation_{result.validation_metric}": acc}, step=step)
        tracker.log_metrics(result.metrics, prefix="heldout_")
        control = check_convergence(checkpoint_uri, seed_scenes, control_steps, control_lr, batch_size,
                                    eval_config, seed)
        tracker.log_metrics(control)
        summary = {**result.metrics, **control, "final_loss": sum(result.losses[-50:]) / max(1, len(result.losses[-50:]))}
        tracker.log_dict(summary, "pretrain_summary.json")
        write_checkpoint_card(checkpoint_uri, {
            "command": " ".join(["asg pretrain", f"--out {checkpoint_uri}", f"--backbone {backbone}", f"--size {size}",
                                 f"--seed-scenes {seed_scenes}", f"--steps {steps}", f"--lr {lr}", f"--seed {seed}",
                                 *([f"--init-from {init_from}"] if init_from else []),
                                 *([f"--t2i-per-scene {t2i_per_scene}"] if t2i_per_scene != 1 else []),
                                 *(["--relation-reading"] if relation_reading else []),
                                 *([f"--mix {format_mix(mix)}"] if mix else []),
                                 f"--control-steps {control_steps}"]),
            "seed": seed, "seed_scenes": seed_scenes, "t2i_per_scene": t2i_per_scene,
            "relation_reading": relation_reading, "steps": steps, **({"mix": mix} if mix else {}),
            "batch_size": batch_size, "lr": lr,
            "control_lr": control_lr, "metrics": summary,
            f"validation_{result.validation_metric}": [[s, a] for s, a in result.validation]})
    print(f"pretrained {checkpoint_uri}: VQA {summary['vqa_accuracy']:.3f}, GenEval-2D {summary['geneval_overall']:.3f}, "
          f"matched-control VQA delta {control['control_vqa_delta']:+.3f}")
    return summary
