"""The `asg` command line: demo, pretrain, round, evaluate, experiment, ingest.

    asg --help
    asg demo
    asg pretrain --out models/checkpoints/shapes-base
    asg round --round-idx 1 --checkpoint asg_home/objects/checkpoints/round-0
    asg evaluate --checkpoint models/checkpoints/shapes-base
    asg ingest ./my_images
    asg nightly --preset cpu-tiny          # one nightly round (champion in, promotion gate out)
    asg serve --preset cpu-tiny            # serve the nightly/evaluate/pretrain deployments
    asg dashboard                          # inspect questions, generations and rounds in a browser
    asg lineage --round-idx 0              # code, flow run, checkpoint and table versions of a round

Configured servers (an http(s) MLFLOW_TRACKING_URI, PREFECT_API_URL, ASG_S3_ENDPOINT_URL) are checked
before a command starts. Expected failures print one `asg: ...` line and exit with code 2; `asg --debug`
(or ASG_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

import flows  # noqa: F401 - sets offline defaults for Prefect and MLflow before they are imported
from storage.checkpoints import StorageFull
from storage.leases import LeaseHeld

# Kept in step with flows.experiment.PRESET_ARMS (a test checks), so `asg --help` needs no heavy import.
PRESET_ARM_NAMES = ("paper", "verified", "agreement", "compose", "gold-ceiling", "compose-gold-ceiling")


def _round_config(args):
    from flows.round import RoundConfig

    fields = {"source": args.source, "n_images": args.images, "seed": args.seed, "preset": args.preset,
              "shards": args.shards, "finetune_processes": args.finetune_processes,
              "generator_update": getattr(args, "generator_update", None)}
    if args.quick:
        fields.update(finetune_steps={"solver": 20, "proposer": 10, "generator": 20}, evaluation="tiny")
    return RoundConfig(**{k: v for k, v in fields.items() if v is not None})


def _add_fresh_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fresh", action="store_true",
                   help="recompute every stage; by default a re-run with the same arguments reuses the stages a "
                        "crashed run finished")


def _add_round_options(p: argparse.ArgumentParser) -> None:
    _add_fresh_option(p)
    p.add_argument("--source", help="unlabeled images: world://unlabeled?n=1000&seed=0 (default) or a folder URL")
    p.add_argument("--images", type=int, help="images used by the round (default 1000)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--preset", choices=list(PRESET_ARM_NAMES),
                   help="compose (default): the Solver learns scenes recomposed from the tiles it named, the "
                        "Generator its best tile-verified images; paper: METHOD.md's rewards and RL updates; "
                        "verified: imitation of confident "
                        "and Solver-verified items with seed replay; agreement: imitation of majority labels "
                        "confirmed by the mirrored-image and caption-drawn views; gold-ceiling and "
                        "compose-gold-ceiling: not methods, the world's true labels on the items the Proposer "
                        "asked / the items compose made (embedded world only)")
    p.add_argument("--quick", action="store_true", help="few fine-tune steps and a tiny evaluation (smoke runs)")
    p.add_argument("--generator-update", choices=["auto", "imitation", "preference"],
                   help="the Generator's update under compose: auto (default: preference pairs for a flow or "
                        "diffusion generator, imitation for an autoregressive one), imitation or preference")
    p.add_argument("--shards", type=int, help="shards per rollout stage (default 1)")
    p.add_argument("--finetune-processes", type=int, help="data-parallel fine-tune ranks (default 1)")
    _add_runner_options(p)


def _add_runner_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task-runner", choices=["inprocess", "dask", "ray"],
                   help="where shards run (default: $ASG_TASK_RUNNER or inprocess)")
    p.add_argument("--dask-address", help="an existing Dask scheduler (default: a LocalCluster)")
    p.add_argument("--workers", type=int, help="worker processes of a local Dask or Ray cluster (default 2)")


def _runner_environment(args) -> None:
    """Runner options become ASG_* variables, read when the flows are imported (flows/task_runners.py)."""
    for option, variable in (("task_runner", "ASG_TASK_RUNNER"), ("dask_address", "ASG_DASK_ADDRESS"),
                             ("workers", "ASG_DASK_WORKERS")):
        value = getattr(args, option, None)
        if value is not None:
            os.environ[variable] = str(value)


def _checkpoint(path: str) -> str:
    """`path`, once its config.json, the backbone it names, its safetensors headers and the absence of pickle
    weights check out."""
    from models.registry import BACKBONES, backbone_class
    from storage.input_checks import check_checkpoint
    from storage.settings import Settings

    backbone = check_checkpoint(path, Settings.from_env())
    if Path(path).is_dir():
        from models.weight_checks import refuse_pickle_weights

        refuse_pickle_weights(path)
    if backbone not in BACKBONES:  # a registered name needs no import here; anything else must import
        try:
            backbone_class(backbone)
        except ValueError as exc:
            raise ValueError(f"checkpoint {path}: {exc}") from exc
    return path


def _source(source: str | None) -> None:
    """Check a round's image source (world:// query or folder URL) before the flow starts."""
    from storage.input_checks import check_image_folder
    from storage.settings import Settings
    from tasks.ingest import parse_world_source

    if source is None:
        return
    if source.startswith("world://"):
        parse_world_source(source)
    else:
        check_image_folder(source, Settings.from_env())


def _benchmark_files(args) -> None:
    """Check `asg evaluate`'s external files line by line before the flow starts."""
    from storage.input_checks import check_jsonl_file, check_vqa_file
    from storage.settings import Settings

    if args.geneval_metadata and not args.geneval_out:
        raise ValueError("--geneval-metadata needs --geneval-out (the folder to write samples into)")
    if args.vqa_file:
        check_vqa_file(args.vqa_file, Settings.from_env())
    if args.geneval_metadata:
        check_jsonl_file(args.geneval_metadata, Settings.from_env())


def cmd_demo(args) -> None:
    from flows.demo import SHIPPED_BASE, demo_flow

    config = _round_config(args)
    if args.images is not None and args.source is None:
        config = config.model_copy(update={"source": f"world://unlabeled?n={args.images}&seed={config.seed}"})
    _source(args.source)
    demo_flow(config, base_checkpoint=_checkpoint(args.checkpoint or str(SHIPPED_BASE)))


def cmd_pretrain(args) -> None:
    if args.init_from:
        _checkpoint(args.init_from)
    if args.relation_reading and (args.backbone != "shapes" or args.init_from):
        raise ValueError(f"--relation-reading builds a whole shapes base; backbone {args.backbone!r}"
                         + (" takes it from its --init-from trunk" if args.init_from else " has no such option"))
    mix = None
    if args.mix:
        from tasks.logic.pretrain_mix import RELATION_READING_GROUPS, SEED_SET_GROUPS, parse_mix

        if args.init_from:
            raise ValueError("--mix weighs a whole base's seed-set groups; with --init-from only the denoiser "
                             "trains, on text-to-image pairs")
        mix = parse_mix(args.mix, RELATION_READING_GROUPS if args.relation_reading else SEED_SET_GROUPS)
    from flows.pretrain import pretrain_flow

    if args.backbone != "shapes":
        from models.registry import backbone_class

        backbone_class(args.backbone)  # raises a one-line error for unknown names
    pretrain_flow(args.out, backbone=args.backbone, size=args.size, seed_scenes=args.seed_scenes, steps=args.steps,
                  lr=args.lr, seed=args.seed, control_steps=args.control_steps, init_from=args.init_from,
                  t2i_per_scene=args.t2i_per_scene, relation_reading=args.relation_reading, mix=mix)


def cmd_round(args) -> None:
    _source(args.source)
    from flows.round import round_flow

    result = round_flow(args.round_idx, _checkpoint(args.checkpoint), _round_config(args))
    print(json.dumps(result, indent=1))


def cmd_evaluate(args) -> None:
    _benchmark_files(args)
    from flows.evaluate import evaluate_flow

    from flows.demo import SHIPPED_BASE

    metrics = evaluate_flow(_checkpoint(args.checkpoint or str(SHIPPED_BASE)), tiny=args.tiny, seed=args.seed,
                            vqa_file=args.vqa_file, geneval_metadata=args.geneval_metadata,
                            geneval_out=args.geneval_out, samples_per_prompt=args.samples_per_prompt,
                            split=args.split)
    print(json.dumps(metrics, indent=1))


def cmd_experiment(args) -> None:
    from flows.demo import SHIPPED_BASE
    from flows.experiment import experiment_flow

    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    seeds = tuple(args.seeds) if args.seeds else ((0,) if args.quick else (0, 1, 2))
    experiment_flow(_checkpoint(args.checkpoint or str(SHIPPED_BASE)), rounds=rounds, seeds=seeds,
                    ablations=not args.no_ablations, quick=args.quick, presets=tuple(args.arms), split=args.split,
                    images=args.images, steps_scale=args.steps_scale)


def cmd_ingest(args) -> None:
    from tasks.ingest import ingest_source
    from tasks.logic.file_accounting import summary_line

    result = ingest_source(args.source, args.image_size)
    print(json.dumps(result.metrics, indent=1))
    print(f"{summary_line(result.metrics)} (every path with its image or reason: table image_sources)")


def cmd_nightly(args) -> None:
    from flows.nightly import SHIPPED_BASE_URI, nightly_flow, preset_config

    result = nightly_flow(preset_config(args.preset), base_checkpoint=_checkpoint(args.checkpoint or SHIPPED_BASE_URI),
                          registered_model=args.model, promotion_margin=args.margin)
    print(json.dumps(result, indent=1))


def cmd_serve(args) -> None:
    import os

    from flows.serve import serve_deployments

    if not os.environ.get("PREFECT_API_URL"):
        raise ValueError("asg serve needs a Prefect server: start one with `prefect server start --host 127.0.0.1` "
                         "and set PREFECT_API_URL=http://127.0.0.1:4200/api")
    serve_deployments(args.preset, args.cron, args.timezone)


def cmd_result_storage(args) -> None:
    from flows.result_storage import save_result_storage
    from storage.settings import Settings

    slug = save_result_storage(args.uri, Settings.from_env())
    print(f"saved; now export PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK={slug} for asg serve and workers")


def cmd_dashboard(args) -> None:
    import subprocess

    app = Path(__file__).resolve().parent.parent / "dashboards" / "app.py"
    print(f"asg dashboard: http://127.0.0.1:{args.port} (read-only; Ctrl-C stops it)", flush=True)
    raise SystemExit(subprocess.call([
        sys.executable, "-m", "streamlit", "run", str(app), "--server.address", "127.0.0.1",
        "--server.port", str(args.port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]))


def cmd_lineage(args) -> None:
    from flows.lineage import format_lineage, round_lineage
    from storage.settings import Settings

    lineage = round_lineage(args.round_idx, args.experiment, Settings.from_env())
    print(json.dumps(lineage, indent=2) if args.json else format_lineage(lineage))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asg", description="Ask, Solve, Generate: self-evolution of a unified "
                                     "multimodal model from unlabeled images.")
    parser.add_argument("--debug", action="store_true", default=os.environ.get("ASG_DEBUG", "") not in ("", "0"),
                        help="show the full traceback of an error (also ASG_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="evaluate the base, run one round, evaluate again, print before/after")
    _add_round_options(p)
    p.add_argument("--checkpoint", help="base checkpoint folder (default: the shipped shapes base)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("pretrain", help="train a base on the labeled seed set and check it converged")
    p.add_argument("--out", required=True, help="checkpoint folder or URL to write")
    p.add_argument("--backbone", default="shapes", help="backbone name (default shapes)")
    p.add_argument("--size", default="default", choices=["default", "tiny"])
    p.add_argument("--seed-scenes", type=int, default=300, help="labeled seed scenes (default 300)")
    p.add_argument("--steps", type=int, default=5000, help="optimizer steps (default 5000)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate, cosine-decayed (default 3e-3)")
    p.add_argument("--control-steps", type=int, default=310, help="steps of the convergence check")
    p.add_argument("--t2i-per-scene", type=int, default=1,
                   help="GenEval-grammar text-to-image pairs per seed scene, besides its caption (default 1)")
    p.add_argument("--init-from", help="shapes-diffusion/shapes-flow: take this checkpoint's understanding trunk "
                                       "and train only the denoiser")
    p.add_argument("--relation-reading", action="store_true",
                   help="shapes: a base that reads relations (cell channels, answers as steps, heads taught to attend "
                        "to the objects a question names, locate items; models/relation_reading.py)")
    p.add_argument("--mix", help="share of each seed-set group in a batch, e.g. vqa=0.4,caption=0.1,ask=0.1,"
                                 "spec=0.15,t2i=0.25 (normalised; relate too with --relation-reading; default "
                                 "tasks/logic/pretrain_mix.py)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("round", help="run one self-evolution round from a checkpoint")
    p.add_argument("--round-idx", type=int, required=True, help="round index (0-based)")
    p.add_argument("--checkpoint", required=True, help="input checkpoint folder or URL")
    _add_round_options(p)
    p.set_defaults(func=cmd_round)

    p = sub.add_parser("evaluate", help="score a checkpoint on the held-out shapes-world sets or external files")
    p.add_argument("--checkpoint", help="checkpoint folder (default: the shipped shapes base)")
    p.add_argument("--vqa-file", help="JSON Lines of image, question, answer (image paths relative to the file)")
    p.add_argument("--geneval-metadata", help="GenEval prompt metadata JSON Lines to draw images for")
    p.add_argument("--geneval-out", help="folder for the GenEval sample layout")
    p.add_argument("--samples-per-prompt", type=int, default=4, help="images per GenEval prompt (default 4)")
    p.add_argument("--tiny", action="store_true", help="a few items only (smoke runs)")
    p.add_argument("--split", choices=("eval", "validation"), default="eval",
                   help="held-out split: eval for reported numbers (default), validation for choices")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("experiment", help="base vs matched control vs self-evolution (+ ablations); writes a report")
    _add_fresh_option(p)
    p.add_argument("--checkpoint", help="base checkpoint (default: the shipped shapes base)")
    p.add_argument("--rounds", type=int, help="rounds per arm (default 3; 1 with --quick)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds of the base/control/preset arms (default 0 1 2)")
    p.add_argument("--no-ablations", action="store_true", help="skip the five ablation arms")
    p.add_argument("--arms", nargs="+", choices=list(PRESET_ARM_NAMES), default=list(PRESET_ARM_NAMES),
                   help="preset arms beside the matched control (default: all; gold-ceiling and "
                        "compose-gold-ceiling are ceilings, not methods)")
    p.add_argument("--split", choices=("eval", "validation"), default="eval",
                   help="held-out split: validation for choosing a recipe, eval for reported numbers (default)")
    p.add_argument("--images", type=int, default=1000, help="unlabeled images per round (default 1000)")
    p.add_argument("--steps-scale", type=float, default=4.0,
                   help="every arm's and the matched control's update steps, in multiples of 120/60/120 per role "
                        "(default 4: 480/240/480, the compose preset's own default)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the report's structure, not gains")
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("nightly", help="one nightly round: from the champion, through the promotion gate")
    _add_fresh_option(p)
    p.add_argument("--preset", default="cpu-tiny", help="cpu-tiny (default) or single-gpu")
    p.add_argument("--checkpoint", help="base checkpoint of the first night (default: the shipped shapes base)")
    p.add_argument("--model", default="asg-shapes", help="registered model name in MLflow (default asg-shapes)")
    p.add_argument("--margin", type=float, default=0.005, help="validation gain needed to promote (default 0.005)")
    _add_runner_options(p)
    p.set_defaults(func=cmd_nightly)

    p = sub.add_parser("serve", help="serve the nightly, evaluate and pretrain deployments (needs a Prefect server)")
    p.add_argument("--preset", default="cpu-tiny", help="nightly preset: cpu-tiny (default) or single-gpu")
    p.add_argument("--cron", default="0 2 * * *", help="nightly schedule (default 0 2 * * *)")
    p.add_argument("--timezone", default="UTC", help="IANA timezone of the schedule (default UTC)")
    _add_runner_options(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("dashboard", help="read-only web app over the QA datasets and rounds (127.0.0.1)")
    p.add_argument("--port", type=int, default=8501, help="port on 127.0.0.1 (default 8501)")
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("result-storage", help="keep Prefect's persisted stage results in an object store")
    p.add_argument("uri", help="s3://bucket/prefix (endpoint from ASG_S3_ENDPOINT_URL, credentials from AWS_*)")
    p.set_defaults(func=cmd_result_storage)

    p = sub.add_parser("lineage", help="what made a round: code version, Prefect flow run, checkpoint, table versions")
    p.add_argument("--round-idx", type=int, required=True)
    p.add_argument("--experiment", default="asg-evolution", help="MLflow experiment (default asg-evolution; "
                                                                 "asg-nightly for nightly rounds)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_lineage)

    p = sub.add_parser("ingest", help="ingest unlabeled images from a folder URL or world:// source")
    p.add_argument("source", help="folder path, file://, s3://… or world://unlabeled?n=…&seed=…")
    p.add_argument("--image-size", type=int, default=32, help="side images are resized to (default 32)")
    p.set_defaults(func=cmd_ingest)
    return parser


# The servers each command talks to (checked before it starts); commands not named here use all three.
SERVERS_USED = {"ingest": ("s3",), "result-storage": ("prefect",), "dashboard": (), "lineage": ("mlflow", "s3")}
# Failures of what the user gave (files, names, servers): one line, exit code 2, no traceback.
EXPECTED_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError,
                   ConnectionError, LeaseHeld, StorageFull)


@contextlib.contextmanager
def _stage_cache(fresh: bool):
    """With `fresh`, every stage recomputes and overwrites its cached result (Prefect's refresh_cache)."""
    if not fresh:
        yield
        return
    from prefect.settings import PREFECT_TASKS_REFRESH_CACHE, temporary_settings

    saved = os.environ.get("PREFECT_TASKS_REFRESH_CACHE")
    os.environ["PREFECT_TASKS_REFRESH_CACHE"] = "true"  # for processes this command starts (Dask, Ray workers)
    try:
        with temporary_settings({PREFECT_TASKS_REFRESH_CACHE: True}):
            yield
    finally:
        if saved is None:
            os.environ.pop("PREFECT_TASKS_REFRESH_CACHE", None)
        else:
            os.environ["PREFECT_TASKS_REFRESH_CACHE"] = saved


def _one_line(exc: Exception) -> str:
    """The error as one line; a pydantic error lists each field's message but never the value given (a URL
    with credentials, say)."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                         for e in exc.errors())
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    from storage.server_checks import check_servers
    from storage.settings import Settings

    args = build_parser().parse_args(argv)
    _runner_environment(args)
    try:
        check_servers(Settings.from_env(), SERVERS_USED.get(args.command, ("mlflow", "prefect", "s3")))
        with _stage_cache(getattr(args, "fresh", False)):
            args.func(args)
    except EXPECTED_ERRORS as exc:
        if args.debug:
            raise
        message = _one_line(exc)
        print(f"asg: {message or type(exc).__name__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
