"""Benchmark: what orchestration, storage and tracking add to a round, over its bare model calls.

    .venv/bin/python benchmarks/round_overhead.py [--images 1000] [--repeats 6] [--processes fresh|one] [--quick]

Side by side, on the same unlabeled images, the shipped base and the same sizes
(K candidates, N Solver samples, L images per spec, fine-tune steps and batch size):

1. **flow**: `round_flow` with the `paper` preset (Prefect tasks with persisted results, every row upserted into
   LanceDB, MLflow run with params, metrics, report and checkpoint artifacts), evaluation and diagnose off (both
   are evaluation-only work against the hidden scenes);
2. **bare**: a plain Python loop making the flow's model calls on the flow's round images (read, with the flow's
   training examples, before the loop's clock starts) through the stages' own in-memory chunk functions: the same
   order, batches and per-item seeds, the same STE selection, propose + greedy STE pass, N-sample solving, the
   audit's cross-check views, specs with their source-image checks and retries, L images per accepted spec,
   scoring, and the three roles' policy updates on the flow's examples; nothing stored, tracked or orchestrated.

So both sides do the same model work, and the script checks it: it prints the share of the loop's outputs
(selected questions, answers, cross-check answers, captions of the score stage) equal to the flow's stored rows.
(Until 2026-12-07 the loop drew its own rollouts with other seeds and selected the first well-formed candidate, not
the highest-STE one, so its questions, answers and captions, and with them the calls' cost, differed from the
flow's.)

Prefect's temporary server is started by a warm-up flow before timing (a served deployment finds it
running), and a throwaway model load and call warm imports and kernels for both. Flow and loop run in pairs
(`--repeats`), **alternating which goes first** (even pairs flow then loop, odd pairs loop then flow; a loop that
goes first reads the previous pair's flow rows, which a seeded round reproduces exactly, as the equality check
shows), so a slow drift of the machine falls on both sides alike.

The verdict (fixed on 2026-12-07 before any run of it, because the best-of-N wall times of the two sides moved by
more than the overhead between runs, -2.5% and +4.6%): the overhead is the **median over pairs of
(flow - loop) / flow**, printed with every pair's share; the best-of-N shares stay beside it for comparison with
earlier runs.

Each side runs in a **fresh process** (`--processes fresh`, the default since 2026-12-07's second run of the
paired design): a child process warms up (Prefect's temporary server, the model's imports and kernels), then
times its one side and writes it as JSON. In one process (`--processes one`, the first paired run), a loop that
followed another loop took 124-135 s and one that followed a flow 112-114 s, the same work: what the side before
left in the process (its heap, caches) changed the next side's speed, which alternating the order does not cancel.
A fresh process, though, pays the flow's first use of MLflow and LanceDB inside its clock (about 2.5 s more outside
the stages than in a warm process), which the warm-up does not touch.

Prints both wall times, the flow's time by stage and the CPU seconds of this process and its children (Prefect's
temporary server) during each side; writes benchmarks/results/round_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "models" / "checkpoints" / "shapes-base"


def _chunk_size(shard_function, name: str) -> int:
    """The chunk size a stage's shard function uses by default (the flow passes none), so the loop batches alike."""
    import inspect

    return inspect.signature(shard_function).parameters[name].default


def bare_round(config, ids: list[str], images: list, flow_examples: dict[str, list], seed: int
               ) -> tuple[dict[str, float], dict[str, dict[str, str]]]:
    """The flow's model calls in a loop, on the same images in the same order, batches and per-item seeds (the
    stages' in-memory chunk functions), nothing stored, tracked or orchestrated: the model work is the flow's own,
    and the outputs say so. Each role trains on `flow_examples` (the flow filter's, which these rollouts match).
    Returns seconds per phase and the outputs to compare with the flow's rows."""
    import pandas as pd

    from models.policy_training import PolicyConfig, policy_update
    from models.registry import load_backbone
    from storage.image_files import decode_png
    from tasks.cross_check import cross_check_chunk, cross_check_rows
    from tasks.finetune import PAPER_OBJECTIVES
    from tasks.generate import _generate_chunk, generate_rows
    from tasks.logic.selection import selected_candidates
    from tasks.logic.shards import chunks, spec_chunks
    from tasks.logic.ste import ste_difficulties
    from tasks.propose import propose_chunk, propose_rows
    from tasks.score import score_chunk, score_rows
    from tasks.solve import solve_chunk, solve_rows

    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    backbone = load_backbone(BASE)
    backbone.attach_roles()
    seconds["load"] = time.perf_counter() - clock
    image_of = dict(zip(ids, images))

    clock = time.perf_counter()  # candidates, the greedy STE pass, d_STE (no earlier rounds) and selection
    order = {image_id: k for k, image_id in enumerate(ids)}
    candidates = []
    for chunk in chunks(ids, _chunk_size(propose_rows, "chunk_images")):
        candidates += propose_chunk(backbone, list(chunk), [image_of[i] for i in chunk], order, 0, config.propose, seed)
    us = [c["ste_raw"] for c in candidates]
    difficulties = ste_difficulties(us, []) if config.propose.use_ste else [0.5] * len(us)
    picked = selected_candidates(us, [c["well_formed"] for c in candidates], difficulties,
                                 config.propose.n_candidates, config.propose.use_ste)
    selected = pd.DataFrame([{**c, "ste_difficulty": d} for c, d, keep in zip(candidates, difficulties, picked)
                             if keep]).sort_values("question_id").reset_index(drop=True)
    seconds["propose"] = time.perf_counter() - clock

    clock = time.perf_counter()
    answers = []
    for chunk in chunks(selected, _chunk_size(solve_rows, "chunk_questions")):
        answers += solve_chunk(backbone, chunk, [image_of[i] for i in chunk["image_id"]], 0, config.solve, seed)[0]
    seconds["solve"] = time.perf_counter() - clock

    clock = time.perf_counter()  # the label-source audit's views of each question
    by_image: dict[str, list[dict]] = {}
    for q in selected.to_dict("records"):
        by_image.setdefault(q["image_id"], []).append(q)
    checked = []
    for chunk in chunks(sorted(by_image), _chunk_size(cross_check_rows, "chunk_images")):
        checked += cross_check_chunk(backbone, list(chunk), [image_of[i] for i in chunk], by_image, 0,
                                     config.generate.temperature, seed)
    seconds["cross_check"] = time.perf_counter() - clock

    clock = time.perf_counter()  # the paper preset writes no targeted specs
    specs, generations = [], []
    for chunk in chunks(ids, _chunk_size(generate_rows, "chunk_images")):
        s, g = _generate_chunk(backbone, 0, list(chunk), [image_of[i] for i in chunk], config.generate.n_per_prompt,
                               config.generate.temperature, seed, _chunk_size(generate_rows, "max_retries"))
        specs += s
        generations += g
    seconds["generate"] = time.perf_counter() - clock

    clock = time.perf_counter()
    scores = []
    gens = pd.DataFrame(generations, columns=["generation_id", "spec_id", "round_idx", "sample_idx", "prompt", "png"])
    valid = pd.DataFrame([s for s in specs if s["valid"]], columns=list(specs[0]) if specs else ["spec_id"])
    valid = valid.set_index("spec_id")
    for part in spec_chunks(gens, _chunk_size(score_rows, "chunk_specs")):
        part = part.sort_values("generation_id").reset_index(drop=True)
        scores += score_chunk(backbone, [decode_png(png) for png in part["png"]], 0, part, valid, config.score, seed)
    seconds["score"] = time.perf_counter() - clock

    clock = time.perf_counter()
    for role, steps in config.role_steps().items():
        role_clock = time.perf_counter()
        policy_update(backbone, role, flow_examples[role], config.finetune.batch_size,
                      PolicyConfig(steps=steps, lr=config.finetune.policy_lr, **PAPER_OBJECTIVES[role]))
        seconds[f"finetune_{role}"] = time.perf_counter() - role_clock
    seconds["finetune"] = time.perf_counter() - clock
    outputs = {"questions": {q: t for q, t in zip(selected["question_id"], selected["question"])},
               "answers": {a["answer_id"]: a["text"] for a in answers},
               "cross_checks": {c["question_id"]: c["flip_text"] + "|" + c["caption_view_text"] for c in checked},
               "scores": {r["generation_id"]: r["caption"] for r in scores}}
    return seconds, outputs


def same_outputs(db, outputs: dict[str, dict[str, str]]) -> dict[str, float]:
    """Share of the loop's outputs equal to the flow's stored rows, per table (1.0: the same model work)."""
    from storage.tables import read

    stored = {"questions": ("question_id", lambda f: f["question"], "selected = true"),
              "answers": ("answer_id", lambda f: f["text"], None),
              "cross_checks": ("question_id", lambda f: f["flip_text"] + "|" + f["caption_view_text"], None),
              "scores": ("generation_id", lambda f: f["caption"], None)}
    shares = {}
    for table, (key, value, where) in stored.items():
        frame = read(db, table, where=where)
        flow = dict(zip(frame[key], value(frame)))
        mine = outputs[table]
        shares[table] = sum(flow.get(k) == v for k, v in mine.items()) / max(1, len(mine), len(flow))
    return shares


def paired_share(flow_seconds: float, loop_seconds: float) -> float:
    """One pair's overhead as a share of the flow's wall time.

    >>> round(paired_share(120.0, 114.0), 3)
    0.05
    """
    return (flow_seconds - loop_seconds) / flow_seconds


def cpu_seconds(since: dict[str, float] | None = None) -> dict[str, float]:
    """CPU seconds (user + system) of this process and of its child processes now alive (Prefect's temporary
    server, a local MLflow or Dask), minus `since`: what else ran on the machine's cores beside the model calls."""
    import psutil

    me = psutil.Process()
    children = 0.0
    for child in me.children(recursive=True):
        try:
            times = child.cpu_times()
            children += times.user + times.system
        except psutil.Error:
            continue
    own = me.cpu_times()
    now = {"this_process": own.user + own.system, "child_processes": children}
    return {k: v - (since or {}).get(k, 0.0) for k, v in now.items()}


def thread_cpu_seconds() -> dict[int, tuple[str, float]]:
    """CPU seconds of each live thread of this process by OS thread id, with its Python name where it is a Python
    thread and its OS name otherwise (torch's OpenMP workers, native pools)."""
    import threading

    import psutil

    names = {t.native_id: t.name for t in threading.enumerate()}
    out = {}
    for thread in psutil.Process().threads():
        try:
            comm = Path(f"/proc/self/task/{thread.id}/comm").read_text().strip()
        except OSError:
            comm = "?"
        out[thread.id] = (names.get(thread.id, f"native:{comm}"), thread.user_time + thread.system_time)
    return out


def cpu_by_thread(before: dict[int, tuple[str, float]], process_cpu: float) -> dict[str, float]:
    """Where a timed side's CPU went: each thread's seconds since `before` (threads of one name summed), and the
    rest of the process's `process_cpu` as threads that ended during the side."""
    now = thread_cpu_seconds()
    spent: dict[str, float] = {}
    for tid, (name, seconds) in now.items():
        spent[name] = spent.get(name, 0.0) + seconds - before.get(tid, (name, 0.0))[1]
    spent["threads that ended"] = process_cpu - sum(spent.values())
    return {k: round(v, 2) for k, v in sorted(spent.items(), key=lambda kv: -kv[1]) if abs(v) >= 0.05}


def round_config(images: int, quick: bool):
    """The round both sides run. The bare loop makes the paper round's calls (policy updates, the audit's
    cross-check; no compose or tile reading), so the flow runs the paper preset: since the default became compose,
    an unpinned flow made more model calls than the loop and counted them as overhead. Evaluation and diagnose (the
    round's labels judged with the hidden scenes, parsing every generated image) are evaluation-only work the loop
    does not do, so both are off."""
    from flows.round import RoundConfig

    return RoundConfig(source=f"world://unlabeled?n={images}&seed=0", n_images=images,
                       evaluation="none", diagnose=False, preset="paper",
                       **({"finetune_steps": {"solver": 6, "proposer": 3, "generator": 6}} if quick else {}))


def warm_up() -> None:
    """Prefect's temporary server started (a warm-up flow) and the model's imports and first kernels warm, outside
    the timings, for both sides alike (the flow's cache stays empty)."""
    import flows  # noqa: F401 - offline defaults
    from prefect import flow

    from models.registry import load_backbone
    from world import splits
    from world.render import render

    @flow(name="asg-bench-warmup")
    def warmup() -> int:
        return 1

    warmup()
    warm = load_backbone(BASE)
    warm.attach_roles()
    warm.propose_questions([render(splits.scene_at("unlabeled", i, 0)) for i in range(8)], 1, 1.0, seed=0)
    del warm


def time_flow(config, home: Path) -> tuple[float, dict, dict]:
    """The round flow on a fresh ASG_HOME: (wall seconds, its metrics, CPU seconds)."""
    from flows.round import round_flow

    os.environ["ASG_HOME"] = str(home)
    threads, before, clock = thread_cpu_seconds(), cpu_seconds(), time.perf_counter()
    out = round_flow(0, str(BASE), config, experiment="asg-bench")
    seconds, cpu = time.perf_counter() - clock, cpu_seconds(before)
    return seconds, out, {**cpu, "by_thread": cpu_by_thread(threads, cpu["this_process"])}


def time_loop(config, home: Path) -> tuple[float, dict, dict, dict]:
    """The bare loop on the round a flow stored under `home` (its images and examples read before the clock: the
    flow's reads are in its time): (wall seconds, seconds by phase, CPU seconds, outputs equal to the flow's)."""
    from storage.settings import Settings
    from storage.tables import connect
    from tasks.finetune import stored_examples
    from tasks.round_inputs import images_by_id, round_image_ids

    os.environ["ASG_HOME"] = str(home)
    db = connect(Settings.from_env())
    ids = round_image_ids(db, config.source, config.n_images, 0, config.seed)
    images = images_by_id(db, "images", "image_id", ids)
    flow_examples = {role: stored_examples(db, 0, role) for role in config.role_steps()}
    threads, before, clock = thread_cpu_seconds(), cpu_seconds(), time.perf_counter()
    phases, outputs = bare_round(config, ids, images, flow_examples, config.seed)
    seconds, cpu = time.perf_counter() - clock, cpu_seconds(before)
    cpu = {**cpu, "by_thread": cpu_by_thread(threads, cpu["this_process"])}
    del flow_examples, images
    return seconds, phases, cpu, same_outputs(db, outputs)


def child(side: str, home: str, out: str, images: int, quick: bool) -> None:
    """One side in a process of its own (`--processes fresh`): warm up, time it, write the result as JSON."""
    os.environ["PREFECT_HOME"] = str(Path(home).parent / f"prefect-{Path(out).stem}")
    config = round_config(images, quick)
    warm_up()
    if side == "flow":
        seconds, metrics, cpu = time_flow(config, Path(home))
        result = {"seconds": seconds, "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                  "cpu": cpu}
    else:
        seconds, phases, cpu, same = time_loop(config, Path(home))
        result = {"seconds": seconds, "phases": phases, "cpu": cpu, "same": same}
    Path(out).write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="few fine-tune steps (a smoke run of this script)")
    parser.add_argument("--repeats", type=int, default=6,
                        help="flow/loop pairs, alternating which runs first; the median paired share is the verdict")
    parser.add_argument("--processes", choices=["fresh", "one"], default="fresh",
                        help="fresh: every side in a new process (no heap or cache left by the side before); "
                             "one: all in this process, as before 2026-12-07's second run")
    parser.add_argument("--child", nargs=3, metavar=("SIDE", "HOME", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, images=args.images, quick=args.quick)
        return
    home = Path(tempfile.mkdtemp(prefix="asg-bench-overhead-"))
    os.environ.update({"ASG_HOME": str(home), "PREFECT_HOME": str(home / "prefect")})
    config = round_config(args.images, args.quick)
    if args.processes == "one":
        warm_up()
    flow_runs, bare_runs, same = [], [], []

    def run(side: str, repeat: int) -> None:
        if args.processes == "fresh":
            out = home / f"{side}-{len(flow_runs if side == 'flow' else bare_runs)}.json"
            command = [sys.executable, __file__, "--child", side, str(home / f"repeat-{repeat}"), str(out),
                       "--images", str(args.images)] + (["--quick"] if args.quick else [])
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            result = json.loads(out.read_text())
            if side == "flow":
                flow_runs.append((result["seconds"], result["metrics"], result["cpu"]))
            else:
                bare_runs.append((result["seconds"], result["phases"], result["cpu"]))
                same.append(result["same"])
        elif side == "flow":
            flow_runs.append(time_flow(config, home / f"repeat-{repeat}"))
        else:
            seconds, phases, cpu, equal = time_loop(config, home / f"repeat-{repeat}")
            bare_runs.append((seconds, phases, cpu))
            same.append(equal)

    for repeat in range(args.repeats):
        if repeat % 2 == 0:  # flow first; the loop runs on this pair's flow rows
            run("flow", repeat)
            run("loop", repeat)
        else:  # loop first, on the previous pair's flow rows (the same seeded round)
            run("loop", repeat - 1)
            run("flow", repeat)
        print(f"pair {repeat} ({'flow first' if repeat % 2 == 0 else 'loop first'}): flow {flow_runs[-1][0]:.1f} s, "
              f"loop {bare_runs[-1][0]:.1f} s, overhead {paired_share(flow_runs[-1][0], bare_runs[-1][0]):+.1%}; "
              "loop outputs equal to the flow's rows: " + "  ".join(f"{k} {v:.3f}" for k, v in same[-1].items()),
              flush=True)
    counts = {role: int(flow_runs[-1][1][f"finetune.{role}_examples"]) for role in config.role_steps()}
    pair_shares = [paired_share(f[0], b[0]) for f, b in zip(flow_runs, bare_runs)]
    median_share = statistics.median(pair_shares)
    flow_s, out, flow_cpu = min(flow_runs, key=lambda r: r[0])
    bare_s, bare, bare_cpu = min(bare_runs, key=lambda r: r[0])
    stages = {k.removesuffix(".seconds"): v for k, v in out.items() if k.endswith(".seconds")}
    shard_compute = {k.removesuffix(".shard_seconds_sum"): v for k, v in out.items() if k.endswith(".shard_seconds_sum")}
    finetune_parts = {k.removeprefix("finetune."): v for k, v in out.items()
                      if k.startswith("finetune.") and k.endswith("_seconds")}
    outside = {"before the first stage": out["round.setup_seconds"], "after the last": out["round.wrapup_seconds"],
               "Prefect task runs between stages": out["round.total_seconds"] - out["round.setup_seconds"]
               - out["round.wrapup_seconds"] - sum(stages.values()),
               "flow run, lease and MLflow run": flow_s - out["round.total_seconds"]}
    result = {"images": args.images, "bare_seconds": bare_s, "flow_seconds": flow_s,
              "overhead_seconds": flow_s - bare_s, "overhead_share_of_flow": (flow_s - bare_s) / flow_s,
              "bare_by_phase": bare, "flow_stage_seconds": stages, "flow_shard_seconds": shard_compute,
              "flow_finetune_seconds": finetune_parts,
              "flow_outside_stages_seconds": outside,
              "training_examples": counts, "all_flow_seconds": [r[0] for r in flow_runs],
              "all_bare_seconds": [r[0] for r in bare_runs],
              "cpu_seconds_flow": flow_cpu, "cpu_seconds_bare": bare_cpu,
              "loop_outputs_equal_to_flow": same, "quick": args.quick,
              "pair_overhead_shares": pair_shares, "median_pair_overhead_share": median_share,
              "processes": args.processes, "pair_order": ["flow first" if r % 2 == 0 else "loop first" for r in range(args.repeats)]}
    print(f"bare model calls: {bare_s:7.1f} s   " + "  ".join(f"{k} {v:.1f}" for k, v in bare.items()
                                                          if not k.startswith("finetune_")))
    print(f"full round flow:  {flow_s:7.1f} s   " + "  ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    print("flow outside its stages: " + "  ".join(f"{k} {v:.1f}" for k, v in outside.items()))
    print("fine-tune stage:  " + "  ".join(f"{k.removesuffix('_seconds')} {v:.1f}" for k, v in finetune_parts.items())
          + "  (loop: " + "  ".join(f"{k.removeprefix('finetune_')} {v:.1f}" for k, v in bare.items()
                                    if k.startswith("finetune_")) + f", all {bare['finetune']:.1f})")
    for name, cpu in (("flow", flow_cpu), ("loop", bare_cpu)):
        print(f"CPU seconds during the {name}: " + "  ".join(f"{k} {v:.1f}" for k, v in cpu.items()
                                                             if k != "by_thread"))
        print("  by thread: " + "  ".join(f"{k} {v:.1f}" for k, v in cpu.get("by_thread", {}).items()))
    print(f"best of each: flow {flow_s:.1f} s, loop {bare_s:.1f} s: {100 * (flow_s - bare_s) / flow_s:+.1f}%")
    print("overhead per pair: " + "  ".join(f"{share:+.1%}" for share in pair_shares))
    print(f"overhead (median over {len(pair_shares)} pairs of (flow - loop) / flow): {median_share:+.1%} "
          f"(target <= 3%)")
    out_file = ROOT / "benchmarks" / "results" / ("round_overhead_quick.json" if args.quick else "round_overhead.json")
    out_file.write_text(json.dumps(result, indent=1))
    print(f"wrote {out_file}")


if __name__ == "__main__":
    main()
