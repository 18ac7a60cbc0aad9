"""Benchmark: a round's wall time and peak memory as the unlabeled pool grows, and its rollout stages on
1 vs 2 Dask workers.

    .venv/bin/python benchmarks/round_scale.py --pools 1000 5000 20000     # rounds over the whole pool
    .venv/bin/python benchmarks/round_scale.py --workers 1 2 --pools 1000  # rollout stages on Dask

Each measurement is a fresh process (`python benchmarks/round_scale.py --child …`) on a fresh ASG_HOME,
so peak RSS is that round's alone: psutil samples the round process every 0.2 s (Dask workers are
separate processes and are sampled and reported separately), and each stage's peak comes from the samples inside
its task run's start and end as the round's Prefect API recorded them. A round here is `round_flow` with
evaluation off and the default config (the compose preset, its 480/240/480 fine-tune steps); with `--workers`
only the five rollout stages run, as `shards` = workers. Writes benchmarks/results/round_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "models" / "checkpoints" / "shapes-base"


def child(pool: int, workers: int, out: str) -> None:
    import flows  # noqa: F401
    from prefect import flow

    from flows.round import RoundConfig, rollout_stages, round_flow
    from flows.task_runners import task_runner

    config = RoundConfig(source=f"world://unlabeled?n={pool}&seed=0", n_images=pool, evaluation="none",
                         shards=max(1, workers))
    clock = time.perf_counter()
    if workers:
        @flow(name="asg-bench-rollouts", task_runner=task_runner("dask", workers=workers))
        def rollouts() -> dict:
            return {f"{s.stage}.{k}": v for s in rollout_stages(0, str(BASE), config) for k, v in s.metrics.items()}

        metrics = rollouts()
    else:
        metrics = round_flow(0, str(BASE), config, experiment="asg-bench")
    seconds = time.perf_counter() - clock
    Path(out).write_text(json.dumps({"seconds": seconds, "spans": task_spans(),
                                     "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}}))


def task_spans() -> list[tuple[str, float, float]]:
    """(task name, start, end) in Unix seconds of every task run the round's Prefect API recorded."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(limit=200)
    return sorted(((r.name.rsplit("-", 1)[0], r.start_time.timestamp(), r.end_time.timestamp())
                   for r in runs if r.start_time and r.end_time), key=lambda span: span[1])


def measure(pool: int, workers: int) -> dict:
    import psutil

    home = Path(tempfile.mkdtemp(prefix=f"asg-bench-scale-{pool}-"))
    out = home / "result.json"
    env = {**os.environ, "ASG_HOME": str(home / "asg_home"), "PREFECT_HOME": str(home / "prefect"),
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(pool), str(workers), str(out)], env=env,
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(home / "log.txt", "w"))
    watched = psutil.Process(proc.pid)
    peak_round = peak_workers = 0
    samples = []  # (Unix time, round process RSS): each stage's peak, from the task runs' spans
    while proc.poll() is None:
        try:
            rss = watched.memory_info().rss
            samples.append((time.time(), rss))
            peak_round = max(peak_round, rss)
            # every child but Prefect's temporary API server (uvicorn) is a Dask worker or its nanny
            helpers = [c for c in watched.children(recursive=True)
                       if not any(w in " ".join(c.cmdline()) for w in ("uvicorn", "prefect.server", "prefect server"))]
            peak_workers = max(peak_workers, sum(c.memory_info().rss for c in helpers))
        except psutil.Error:
            pass
        time.sleep(0.2)
    if proc.returncode != 0:
        raise RuntimeError(f"pool {pool} workers {workers} failed; see {home / 'log.txt'}")
    result = json.loads(out.read_text())
    stages = {k.removesuffix(".seconds"): round(v, 1) for k, v in result["metrics"].items() if k.endswith(".seconds")}
    shards = {k.removesuffix(".shard_seconds_sum"): round(v, 1) for k, v in result["metrics"].items()
              if k.endswith(".shard_seconds_sum")}
    stage_peaks = {}
    for name, start, end in result.get("spans", []):
        during = [rss for t, rss in samples if start <= t <= end]
        if during:
            stage_peaks[name] = max(stage_peaks.get(name, 0), round(max(during) / 2**20))
    db_bytes = sum(f.stat().st_size for f in (home / "asg_home" / "lancedb").rglob("*") if f.is_file())
    return {"pool": pool, "workers": workers, "seconds": round(result["seconds"], 1),
            "peak_rss_mb": round(peak_round / 2**20), "peak_worker_processes_rss_mb": round(peak_workers / 2**20),
            "lancedb_mb": round(db_bytes / 2**20, 1), "stage_seconds": stages, "shard_seconds": shards,
            "stage_peak_rss_mb": stage_peaks}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--workers", type=int, nargs="*", default=[],
                        help="Dask worker counts for the rollout-stage comparison (none: whole rounds in-process)")
    args = parser.parse_args()
    rows = []
    for pool in args.pools:
        for workers in (args.workers or [0]):
            row = measure(pool, workers)
            rows.append(row)
            print(json.dumps(row))
    name = "round_scale_dask.json" if args.workers else "round_scale.json"
    (ROOT / "benchmarks" / "results" / name).write_text(json.dumps(rows, indent=1))
    if len(args.workers) == 2:
        for pool in args.pools:
            a, b = (next(r for r in rows if r["pool"] == pool and r["workers"] == w) for w in args.workers)
            print(f"pool {pool}: {args.workers[0]} -> {args.workers[1]} workers: {a['seconds'] / b['seconds']:.2f}x")
    if not args.workers and len(rows) > 1:
        first = rows[0]
        for row in rows[1:]:
            print(f"pool {first['pool']} -> {row['pool']}: time x{row['seconds'] / first['seconds']:.2f}, "
                  f"peak RSS x{row['peak_rss_mb'] / first['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
