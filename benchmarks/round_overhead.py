"""Benchmark: what orchestration, storage and tracking add to a round, over its bare model calls.

    .venv/bin/python benchmarks/round_overhead.py [--images 1000] [--quick]

Side by side in one process, on the same unlabeled scenes, the shipped base and the same sizes
(K candidates, N Solver samples, L images per spec, fine-tune steps and batch size):

1. **bare**: a plain Python loop making the round's model calls — propose + greedy STE spot check,
   N-sample solving of the selected questions, the audit's cross-check views (mirrored image, image drawn from
   the caption), specs with their source-image checks and retries,
   L images per accepted spec, scoring (checks, captions, embeddings) and the three roles' policy
   updates — with nothing stored, tracked or orchestrated;
2. **flow**: `round_flow` with the `paper` preset, whose calls the loop makes (Prefect tasks with persisted results, every row upserted into LanceDB,
   MLflow run with params, metrics, report and checkpoint artifacts), evaluation and diagnose off (both are
   evaluation-only work against the hidden scenes, which the loop does not do).

Prefect's temporary server is started by a warm-up flow before timing (a served deployment finds it
running), and a throwaway model load and call warm imports and kernels for both. Flow and loop alternate
(`--repeats`, default 2) and the best of each is reported; the loop's updates train on the flow's own
examples, read from its tables before the loop's clock starts (`--loop-examples own`: on as many of its own
rollouts as the flow's filter kept, whose lengths, and so the updates' compute, differ). Prints both wall times,
the overhead share, the flow's time by stage and the CPU seconds of this process and its children (Prefect's
temporary server) during each side; writes benchmarks/results/round_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "models" / "checkpoints" / "shapes-base"


def bare_round(config, images, ids, example_counts: dict[str, int], flow_examples: dict[str, list] | None = None
               ) -> dict[str, float]:
    """The round's model calls in a loop; returns seconds per phase. Each role trains on `flow_examples` (the
    flow's own, so both sides' updates do the same work) or, without them, on as many examples as the flow's
    filter kept (`example_counts`), cycled from this loop's own rollouts."""
    from models.policy_training import PolicyConfig, policy_update
    from models.protocol import SolveRequest, TrainingExample
    from models.registry import load_backbone
    from tasks.finetune import PAPER_OBJECTIVES
    from tasks.generate import _generate_chunk
    from tasks.logic.answers import map_to_validators
    from tasks.logic.generation_scores import leave_one_out_diversity
    from tasks.logic.label_sources import mirror_question
    from tasks.logic.proposals import parse_question_proposal
    from tasks.logic.sampling_plan import framing_for, sampler_ladder
    from tasks.logic.shards import item_seed
    from tasks.logic.voting import vote
    from storage.image_files import decode_png

    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    backbone = load_backbone(BASE)
    backbone.attach_roles()
    seconds["load"] = time.perf_counter() - clock

    clock = time.perf_counter()
    raw = backbone.propose_questions(images, config.propose.n_candidates, config.propose.temperature,
                                     seed=[item_seed(0, i) for i in ids])
    parsed = [[parse_question_proposal(t) for t in texts] for texts in raw]
    backbone.solve([SolveRequest(im, p.question, "canonical", 0.0) for im, ps in zip(images, parsed) for p in ps], 0)
    chosen = [(im, next((p for p in ps if p.well_formed), None)) for im, ps in zip(images, parsed)]
    chosen = [(im, p) for im, p in chosen if p is not None]
    proposals = [(im, text) for im, ps, texts in zip(images, parsed, raw) for p, text in zip(ps, texts) if p.well_formed]
    seconds["propose"] = time.perf_counter() - clock

    clock = time.perf_counter()
    ladder = sampler_ladder(config.solve.n_samples)
    requests = [SolveRequest(im, p.question, framing_for(i), t, q) for im, p in chosen
                for i, (t, q) in enumerate(ladder)]
    results = backbone.solve(requests, seed=[item_seed(1, str(i)) for i in range(len(requests))])
    # Shaped as the paper filter's examples: every answer, in the framing it was sampled under, with its own text
    # as the target (the update's cost grows with prompt and target length, so canonical-only examples ran faster).
    solver_examples = []
    n = config.solve.n_samples
    for j, (im, p) in enumerate(chosen):
        mapped = [map_to_validators(r.text, p.validators) for r in results[j * n:(j + 1) * n]]
        majority = vote(mapped).majority
        solver_examples.extend(TrainingExample("vqa", image=im, prompt=p.question, target=answer, framing=framing_for(i),
                                               weight=0.5 if answer == majority else -0.5)
                               for i, answer in enumerate(mapped))
    seconds["solve"] = time.perf_counter() - clock

    clock = time.perf_counter()  # the label-source audit's views of each question (tasks/cross_check.py)
    captions = backbone.caption([im for im, _ in chosen])
    pictures = backbone.generate_images(captions, 1, 1.0, [item_seed(3, str(i)) for i in range(len(chosen))])
    views = [SolveRequest(view, question, "canonical", 0.0, 1.0) for (im, p), picture in zip(chosen, pictures)
             for view, question in ((im[:, ::-1].copy(), mirror_question(p.question)), (picture[0], p.question))]
    backbone.solve(views, seed=[item_seed(4, str(i)) for i in range(len(views))])
    seconds["cross_check"] = time.perf_counter() - clock

    clock = time.perf_counter()
    specs, generations = _generate_chunk(backbone, 0, ids, images, config.generate.n_per_prompt, config.generate.temperature, 0, 2)
    seconds["generate"] = time.perf_counter() - clock

    clock = time.perf_counter()
    by_spec = {s["spec_id"]: s for s in specs}
    drawn = [decode_png(g["png"]) for g in generations]
    answers = sampler_ladder(config.score.n_answers)
    checks = [SolveRequest(im, q, framing_for(i), t, p) for im, g in zip(drawn, generations)
              for q, _ in json.loads(by_spec[g["spec_id"]]["checks_json"]) for i, (t, p) in enumerate(answers)]
    backbone.solve(checks, seed=[item_seed(2, str(i)) for i in range(len(checks))])
    captions = backbone.caption(drawn)
    backbone.embed_texts([g["prompt"] for g in generations])
    backbone.embed_texts(captions)
    backbone.embed_images(drawn)
    per_spec: dict[str, list] = {}
    for im, g in zip(drawn, generations):
        per_spec.setdefault(g["spec_id"], []).append(im)
    for group in per_spec.values():  # S_div within each spec's images, as the score stage computes it
        leave_one_out_diversity(group)
    seconds["score"] = time.perf_counter() - clock

    clock = time.perf_counter()
    examples = {
        "solver": solver_examples,
        "proposer": [TrainingExample("ask", image=im, target=text, weight=0.5) for im, text in proposals],
        "generator": [TrainingExample("t2i", prompt=g["prompt"], target_image=im, weight=0.5)
                      for im, g in zip(drawn, generations)],
    }
    for role, steps in config.role_steps().items():
        role_clock = time.perf_counter()
        pool = examples[role]
        matched = (flow_examples[role] if flow_examples is not None
                   else [pool[i % len(pool)] for i in range(example_counts.get(role, len(pool)))])
        policy_update(backbone, role, matched, config.finetune.batch_size,
                      PolicyConfig(steps=steps, lr=config.finetune.policy_lr, **PAPER_OBJECTIVES[role]))
        seconds[f"finetune_{role}"] = time.perf_counter() - role_clock
    seconds["finetune"] = time.perf_counter() - clock
    return seconds


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="few fine-tune steps (a smoke run of this script)")
    parser.add_argument("--repeats", type=int, default=2, help="flow/loop pairs; the best of each is reported")
    parser.add_argument("--loop-examples", choices=["flow", "own"], default="flow",
                        help="what the loop's updates train on: the flow's own examples (default: both sides' "
                             "updates do the same work, so the difference is orchestration, storage and tracking) "
                             "or its own rollouts cycled to the flow's counts (example lengths differ, and with "
                             "them the updates' compute)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="asg-bench-overhead-"))
    os.environ.update({"ASG_HOME": str(home), "PREFECT_HOME": str(home / "prefect")})
    import flows  # noqa: F401 - offline defaults
    from prefect import flow

    from flows.round import RoundConfig, round_flow
    from storage.image_files import decode_png, encode_png
    from storage.settings import Settings
    from storage.tables import connect
    from tasks.finetune import stored_examples
    from world import splits
    from world.render import render

    # The bare loop makes the paper round's calls (policy updates, the audit's cross-check; no compose or tile
    # reading), so the flow runs the paper preset: since the default became compose, an unpinned flow made more
    # model calls than the loop and counted them as overhead. Evaluation and diagnose (the round's labels judged
    # with the hidden scenes, parsing every generated image) are evaluation-only work the loop does not do, so
    # both are off.
    config = RoundConfig(source=f"world://unlabeled?n={args.images}&seed=0", n_images=args.images,
                         evaluation="none", diagnose=False, preset="paper",
                         **({"finetune_steps": {"solver": 6, "proposer": 3, "generator": 6}} if args.quick else {}))
    scenes = [render(splits.scene_at("unlabeled", i, 0)) for i in range(args.images)]
    images = [decode_png(encode_png(im)) for im in scenes]
    ids = [f"img{i}" for i in range(args.images)]

    @flow(name="asg-bench-warmup")
    def warmup() -> int:
        return 1

    warmup()  # starts Prefect's temporary server outside the timings
    from models.registry import load_backbone

    warm = load_backbone(BASE)  # imports and first kernels warm, for both sides (the flow's cache stays empty)
    warm.attach_roles()
    warm.propose_questions(images[:8], 1, 1.0, seed=0)
    del warm

    flow_runs, bare_runs = [], []
    for repeat in range(args.repeats):  # alternate, keep the best of each (least disturbed by the machine)
        os.environ["ASG_HOME"] = str(home / f"repeat-{repeat}")
        before, clock = cpu_seconds(), time.perf_counter()
        out = round_flow(0, str(BASE), config, experiment="asg-bench")
        flow_runs.append((time.perf_counter() - clock, out, cpu_seconds(before)))
        counts = {role: int(out[f"finetune.{role}_examples"]) for role in config.role_steps()}
        flow_examples = None
        if args.loop_examples == "flow":  # read before the clock starts: the flow's own reads are in its time
            db = connect(Settings.from_env())
            flow_examples = {role: stored_examples(db, 0, role) for role in config.role_steps()}
        before, clock = cpu_seconds(), time.perf_counter()
        bare_phases = bare_round(config, images, ids, counts, flow_examples)
        del flow_examples
        bare_runs.append((time.perf_counter() - clock, bare_phases, cpu_seconds(before)))
    flow_s, out, flow_cpu = min(flow_runs, key=lambda r: r[0])
    bare_s, bare, bare_cpu = min(bare_runs, key=lambda r: r[0])
    stages = {k.removesuffix(".seconds"): v for k, v in out.items() if k.endswith(".seconds")}
    shard_compute = {k.removesuffix(".shard_seconds_sum"): v for k, v in out.items() if k.endswith(".shard_seconds_sum")}
    finetune_parts = {k.removeprefix("finetune."): v for k, v in out.items()
                      if k.startswith("finetune.") and k.endswith("_seconds")}
    result = {"images": args.images, "bare_seconds": bare_s, "flow_seconds": flow_s,
              "overhead_seconds": flow_s - bare_s, "overhead_share_of_flow": (flow_s - bare_s) / flow_s,
              "bare_by_phase": bare, "flow_stage_seconds": stages, "flow_shard_seconds": shard_compute,
              "flow_finetune_seconds": finetune_parts,
              "training_examples": counts, "all_flow_seconds": [r[0] for r in flow_runs],
              "all_bare_seconds": [r[0] for r in bare_runs],
              "cpu_seconds_flow": flow_cpu, "cpu_seconds_bare": bare_cpu, "loop_examples": args.loop_examples,
              "quick": args.quick}
    print(f"bare model calls: {bare_s:7.1f} s   " + "  ".join(f"{k} {v:.1f}" for k, v in bare.items()
                                                          if not k.startswith("finetune_")))
    print(f"full round flow:  {flow_s:7.1f} s   " + "  ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    print("fine-tune stage:  " + "  ".join(f"{k.removesuffix('_seconds')} {v:.1f}" for k, v in finetune_parts.items())
          + "  (loop: " + "  ".join(f"{k.removeprefix('finetune_')} {v:.1f}" for k, v in bare.items()
                                    if k.startswith("finetune_")) + f", all {bare['finetune']:.1f})")
    for name, cpu in (("flow", flow_cpu), ("loop", bare_cpu)):
        print(f"CPU seconds during the {name}: " + "  ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
    print(f"overhead: {flow_s - bare_s:+.1f} s = {100 * (flow_s - bare_s) / flow_s:.1f}% of the flow's wall time "
          f"(target <= 3%)")
    out_file = ROOT / "benchmarks" / "results" / ("round_overhead_quick.json" if args.quick else "round_overhead.json")
    out_file.write_text(json.dumps(result, indent=1))
    print(f"wrote {out_file}")


if __name__ == "__main__":
    main()
