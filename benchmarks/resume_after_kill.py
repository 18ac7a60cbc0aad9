"""Benchmark: how long re-running `asg round` takes after a kill -9 inside a stage, against the round uninterrupted.

    .venv/bin/python benchmarks/resume_after_kill.py [--images 300] [--kill-in finetune report ...|all]

Side by side in one run, each `asg round` (the default preset) a fresh process with its own ASG_HOME:
1. **full**: the round, uninterrupted; its log gives each stage's start (the end of the task before it) and end;
2. for each stage of `--kill-in`, in a fresh home: **killed**, the same round SIGKILLed halfway through that
   stage (by the uninterrupted run's timing), then **resumed**, the same command again in that home: the
   finished stages come back `Cached`. Re-run / full is measured for these stages.
3. For every other stage the re-run time is derived, and marked so: the full round's time from the stage's start
   to its end, plus the time the resumed run with the most cached stages took to reach that stage's start (process
   start, temporary Prefect server and cache hits). For a measured stage both are printed, so the derivation's
   error is visible. Sweeping every stage (`all`) measures all of them and takes about one full round per stage.
Prints a table (the issue's target: at most 60% for a kill in fine-tune) and whether every table equals the
uninterrupted run's; writes benchmarks/results/resume_after_kill.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from storage.settings import Settings  # noqa: E402
from storage.tables import connect, read  # noqa: E402

STAGE_TASK = {"ingest": "ingest-images", "compose": "compose-scenes", "propose": "propose-questions",
              "solve": "solve-and-vote", "cross-check": "cross-check-questions", "generate": "generate-images",
              "score": "score-generations", "tile-verify": "verify-generations-by-tiles", "filter": "filter-examples",
              "finetune": "finetune-roles", "evaluate": "evaluate-checkpoint", "diagnose": "diagnose-round",
              "report": "write-round-report"}
TABLES = {"images": "image_id", "questions": "question_id", "answers": "answer_id", "votes": "question_id",
          "specs": "spec_id", "generations": "generation_id", "scores": "generation_id",
          "filter_decisions": "item_id", "training_examples": "example_id", "cross_checks": "question_id"}


def run(home: Path, args: list[str], kill_after: str | None = None,
        delay_s: float = 0.0) -> tuple[float, int, str, dict[str, float]]:
    """One `asg round`; with `kill_after`, SIGKILL `delay_s` after that task finished. Returns the wall time, the exit
    code, the output and when (seconds from the start) each task finished."""
    env = {**os.environ, "ASG_HOME": str(home), "PREFECT_HOME": str(home / "prefect"), "TQDM_DISABLE": "1",
           "PREFECT_TASKS_REFRESH_CACHE": "false", "PYTHONUNBUFFERED": "1"}
    for key in ("PREFECT_API_URL", "ASG_LANCEDB_URI", "ASG_OBJECTS_URI", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines: list[str] = []
    finished: dict[str, float] = {}

    def kill() -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def read_output() -> None:
        for line in proc.stdout:
            lines.append(line)
            name = task_finished(line)
            if name:
                finished.setdefault(name, time.monotonic() - started)
                if name == kill_after:
                    threading.Timer(delay_s, kill).start()

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    proc.wait()
    reader.join(timeout=10)
    return time.monotonic() - started, proc.returncode, "".join(lines), finished


def task_finished(line: str) -> str | None:
    if "Task run '" in line and "Finished in state" in line:
        return line.split("Task run '", 1)[1].split("'", 1)[0].rsplit("-", 1)[0]
    return None


def finished(output: str, state: str, order: list[str]) -> list[str]:
    names = {task_finished(line) for line in output.splitlines() if f"Finished in state {state}" in line}
    return [n for n in order if n in names]


def tables(home: Path) -> dict[str, pd.DataFrame]:
    db = connect(Settings(home=home, lancedb_uri=str(home / "lancedb"), objects_uri=str(home / "objects"),
                          mlflow_uri=""))
    return {t: read(db, t).drop(columns=["png"], errors="ignore").sort_values(k).reset_index(drop=True)
            for t, k in TABLES.items()}


def stage_start(order: list[str], stage: str) -> str:
    """The task whose end is `stage`'s start: the one before it, skipping the stage's own shard tasks."""
    i = order.index(stage) - 1
    while order[i].endswith("-shard"):
        i -= 1
    return order[i]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--kill-in", nargs="+", choices=["all", *STAGE_TASK], default=["finetune", "report"])
    args = parser.parse_args()
    command = ["round", "--round-idx", "0", "--checkpoint", str(ROOT / "models/checkpoints/shapes-base"),
               "--source", f"world://unlabeled?n={args.images}&seed=5", "--images", str(args.images)]
    root = Path(tempfile.mkdtemp(prefix="asg-resume-bench-"))
    full_s, code, output, times = run(root / "full", command)
    assert code == 0, f"the uninterrupted round failed:\n{output[-3000:]}"
    print(f"full round: {full_s:.0f} s ({args.images} images, default preset)", flush=True)
    reference = tables(root / "full")
    order = sorted(times, key=times.get)  # every task, in the order it finished
    stages = [t for t in order if t in STAGE_TASK.values()]
    wanted = stages if "all" in args.kill_in else [STAGE_TASK[k] for k in args.kill_in if STAGE_TASK[k] in stages]
    measured, reach = {}, {}
    for stage in sorted(wanted, key=stages.index):
        before = stage_start(order, stage)
        home = root / stage
        killed_s, code, _, _ = run(home, command, kill_after=before, delay_s=0.5 * (times[stage] - times[before]))
        if code != -signal.SIGKILL:  # a short stage ended before the kill: kill as soon as it begins
            home = root / f"{stage}-again"
            killed_s, code, _, _ = run(home, command, kill_after=before)
        if code != -signal.SIGKILL:
            print(f"{stage}: the round was not killed (exit {code}); not measured", flush=True)
            continue
        resumed_s, code, output, resumed_times = run(home, command)
        assert code == 0, output[-3000:]
        resumed = tables(home)
        identical = {t: reference[t].equals(resumed[t]) for t in TABLES}
        measured[stage] = {"killed_after_s": round(killed_s, 1), "resumed_s": round(resumed_s, 1),
                           "resumed_over_full": round(resumed_s / full_s, 3),
                           "cached": finished(output, "Cached", order),
                           "recomputed": finished(output, "Completed", order),
                           "tables_identical": all(identical.values())}
        reach = {s: resumed_times[stage_start(order, s)] for s in stages[:stages.index(stage) + 1]}
        print(f"{stage:<28} killed {killed_s:5.0f} s in; re-run {resumed_s:5.0f} s = {resumed_s / full_s:4.0%} of "
              f"the full round; tables identical: {all(identical.values())}", flush=True)
    rows = []
    for stage in stages:
        derived = full_s - times[stage_start(order, stage)] + reach[stage] if stage in reach else None
        rows.append({"stage": stage, "seconds_in_full_round": round(times[stage] - times[stage_start(order, stage)], 1),
                     "derived_resumed_over_full": None if derived is None else round(derived / full_s, 3),
                     **measured.get(stage, {})})
    result = {"images": args.images, "full_s": round(full_s, 1), "stages": rows}
    print("\n| killed in | stage's time in the full round | re-run / full round, measured | derived | "
          "tables identical |\n|---|---|---|---|---|")
    for r in rows:
        got = f"**{r['resumed_over_full']:.0%}**" if "resumed_over_full" in r else "-"
        derived = "-" if r["derived_resumed_over_full"] is None else f"{r['derived_resumed_over_full']:.0%}"
        print(f"| {r['stage']} | {r['seconds_in_full_round']:.1f} s | {got} | {derived} | "
              f"{r.get('tables_identical', '-')} |")
    out = ROOT / "benchmarks" / "results" / "resume_after_kill.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
