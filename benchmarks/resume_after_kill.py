"""Benchmark: how long re-running `asg round` takes after a kill -9, against the same round uninterrupted.

    .venv/bin/python benchmarks/resume_after_kill.py [--images 300] [--kill-in finetune]

Side by side in one run, each `asg round` a fresh process with its own ASG_HOME:
1. **full**: the round, uninterrupted;
2. **killed**: the same round, SIGKILLed once the stage before `--kill-in` has finished (so inside that stage);
3. **resumed**: the same command again in the killed run's home: the finished stages come back `Cached`.
Prints the three wall times, the resumed/full ratio (the issue's target: at most 60% for a kill in fine-tune),
which stages were cached, and whether every table equals the uninterrupted run's; writes
benchmarks/results/resume_after_kill.json.
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

ORDER = ["ingest-images", "propose-questions", "solve-and-vote", "cross-check-questions", "generate-images",
         "score-generations", "filter-examples", "finetune-roles", "evaluate-checkpoint", "diagnose-round"]
STAGE_TASK = {"ingest": "ingest-images", "propose": "propose-questions", "solve": "solve-and-vote",
              "cross-check": "cross-check-questions", "generate": "generate-images", "score": "score-generations",
              "filter": "filter-examples", "finetune": "finetune-roles", "evaluate": "evaluate-checkpoint",
              "diagnose": "diagnose-round"}
TABLES = {"images": "image_id", "questions": "question_id", "answers": "answer_id", "votes": "question_id",
          "specs": "spec_id", "generations": "generation_id", "scores": "generation_id",
          "filter_decisions": "item_id", "training_examples": "example_id", "cross_checks": "question_id"}


def run(home: Path, args: list[str], kill_after: str | None = None) -> tuple[float, int, str]:
    env = {**os.environ, "ASG_HOME": str(home), "PREFECT_HOME": str(home / "prefect"), "TQDM_DISABLE": "1",
           "PREFECT_TASKS_REFRESH_CACHE": "false"}
    for key in ("PREFECT_API_URL", "ASG_LANCEDB_URI", "ASG_OBJECTS_URI", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines: list[str] = []

    def read_output() -> None:
        for line in proc.stdout:
            lines.append(line)
            if kill_after and f"Task run '{kill_after}-" in line and "Finished in state" in line:
                time.sleep(1.0)
                os.killpg(proc.pid, signal.SIGKILL)

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    proc.wait()
    reader.join(timeout=10)
    return time.monotonic() - started, proc.returncode, "".join(lines)


def finished(output: str, state: str) -> list[str]:
    names = {line.split("Task run '", 1)[1].rsplit("-", 1)[0] for line in output.splitlines()
             if "Task run '" in line and f"Finished in state {state}" in line}
    return [n for n in ORDER if n in names]


def tables(home: Path) -> dict[str, pd.DataFrame]:
    db = connect(Settings(home=home, lancedb_uri=str(home / "lancedb"), objects_uri=str(home / "objects"),
                          mlflow_uri=""))
    return {t: read(db, t).drop(columns=["png"], errors="ignore").sort_values(k).reset_index(drop=True)
            for t, k in TABLES.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--kill-in", choices=list(STAGE_TASK), default="finetune")
    args = parser.parse_args()
    before = ORDER[ORDER.index(STAGE_TASK[args.kill_in]) - 1]
    command = ["round", "--round-idx", "0", "--checkpoint", str(ROOT / "models/checkpoints/shapes-base"),
               "--source", f"world://unlabeled?n={args.images}&seed=5", "--images", str(args.images)]
    root = Path(tempfile.mkdtemp(prefix="asg-resume-bench-"))
    full_s, code, _ = run(root / "full", command)
    assert code == 0, "the uninterrupted round failed"
    killed_s, code, _ = run(root / "killed", command, kill_after=before)
    assert code == -signal.SIGKILL, f"the round was not killed (exit {code})"
    resumed_s, code, output = run(root / "killed", command)
    assert code == 0, output[-3000:]
    reference, resumed = tables(root / "full"), tables(root / "killed")
    identical = {t: reference[t].equals(resumed[t]) for t in TABLES}
    result = {"images": args.images, "kill_in": args.kill_in, "full_s": round(full_s, 1),
              "killed_after_s": round(killed_s, 1), "resumed_s": round(resumed_s, 1),
              "resumed_over_full": round(resumed_s / full_s, 3), "cached": finished(output, "Cached"),
              "recomputed": finished(output, "Completed"), "tables_identical": identical}
    print(f"full round {full_s:.0f} s; killed {killed_s:.0f} s in (in {args.kill_in}); re-run {resumed_s:.0f} s = "
          f"{resumed_s / full_s:.0%} of the full round (target <= 60%)")
    print(f"cached: {', '.join(result['cached'])}\nrecomputed: {', '.join(result['recomputed'])}")
    print(f"tables identical to the uninterrupted run: {all(identical.values())} "
          f"({sum(identical.values())}/{len(identical)})")
    out = ROOT / "benchmarks" / "results" / f"resume_after_kill_{args.kill_in}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
