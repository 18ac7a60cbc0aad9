"""Chaos: `asg round` SIGKILLed at a seeded random point inside every stage in turn, each re-run resuming the last.

One home, one chain of runs: run k resumes what runs 1..k-1 finished and is killed inside stage k, at a random
fraction (seeded) of that stage's duration in an uninterrupted run. After every kill the store holds no duplicate
keys and no half-written checkpoint under the round's final name; the run after the last kill completes with
exactly the tables of the uninterrupted run and one MLflow run for the round, FINISHED (every re-run reopened it).
Prints a stage x outcome table.

    .venv/bin/python -m pytest -m slow tests/test_chaos.py -s
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from safetensors import safe_open

from tests.test_resume import ROOT, ROUND, TABLES, _env, _finished, _tables

# Each stage of the paper preset's round (its merge task's name) and the task whose end marks the stage's start.
STAGES = [("ingest-images", "check-backbone"), ("propose-questions", "ingest-images"),
          ("solve-and-vote", "propose-questions"), ("cross-check-questions", "solve-and-vote"),
          ("generate-images", "cross-check-questions"), ("score-generations", "generate-images"),
          ("filter-examples", "score-generations"), ("finetune-roles", "filter-examples"),
          ("evaluate-checkpoint", "finetune-roles"), ("diagnose-round", "evaluate-checkpoint"),
          ("write-round-report", "diagnose-round")]
SEED = 17


def _task(line: str) -> str | None:
    if "Task run '" in line and "Finished in state" in line:
        return line.split("Task run '", 1)[1].split("'", 1)[0].rsplit("-", 1)[0]
    return None


def _run(home: Path, kill_after: str | None = None, delay_s: float = 0.0) -> tuple[int, str, dict[str, float]]:
    """One `asg round`; with `kill_after`, SIGKILL `delay_s` after that task finished. Returns the exit code, the
    output and when (seconds from start) each task finished."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *ROUND], cwd=ROOT, env=_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
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
            name = _task(line)
            if name:
                finished.setdefault(name, time.monotonic() - started)
                if name == kill_after:
                    threading.Timer(delay_s, kill).start()

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    proc.wait(timeout=900)
    reader.join(timeout=10)
    return proc.returncode, "".join(lines), finished


def _no_duplicate_keys(home: Path) -> None:
    for table, frame in _tables(home).items():
        key = TABLES[table]
        assert not frame[key].duplicated().any(), f"{table}: duplicate {key} after a kill"


def _checkpoint_state(home: Path, reference_files: set[str]) -> str:
    """'absent', or 'complete' when every file of the reference checkpoint is there and every tensor file opens;
    anything else fails the test (a half-written checkpoint under the final name)."""
    folder = home / "objects" / "checkpoints" / "round-0"
    if not folder.exists():
        return "absent"
    files = {p.name for p in folder.iterdir() if p.is_file()}
    assert reference_files <= files, f"half-written checkpoint: missing {sorted(reference_files - files)}"
    for name in files:
        if name.endswith(".safetensors"):
            with safe_open(str(folder / name), "pt") as f:
                assert list(f.keys()), name
    return "complete"


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_round_killed_inside_every_stage_in_turn_ends_as_the_uninterrupted_one(tmp_path):
    code, output, reference_times = _run(tmp_path / "uninterrupted")
    assert code == 0, output[-3000:]
    reference = _tables(tmp_path / "uninterrupted")
    reference_ckpt = tmp_path / "uninterrupted" / "objects" / "checkpoints" / "round-0"
    reference_files = {p.name for p in reference_ckpt.iterdir() if p.is_file()}

    rng = random.Random(SEED)
    home = tmp_path / "chaos"
    rows = []
    for stage, before in STAGES:
        duration = reference_times[stage] - reference_times[before]
        fraction = rng.uniform(0.1, 0.9)
        code, output, _ = _run(home, kill_after=before, delay_s=fraction * duration)
        assert code == -signal.SIGKILL, f"{stage}: the run was not killed (exit {code})\n{output[-3000:]}"
        done = _finished(output, "Completed") | _finished(output, "Cached")
        assert before in done and stage not in done, f"the kill missed {stage}: finished {sorted(done)}"
        _no_duplicate_keys(home)
        rows.append({"stage": stage, "killed_at": f"{fraction:.0%} of {duration:.1f} s",
                     "cached_before": len(_finished(output, "Cached")),
                     "checkpoint": _checkpoint_state(home, reference_files)})

    code, output, _ = _run(home)
    assert code == 0, output[-3000:]
    assert "write-round-report" in _finished(output, "Completed")
    assert {"ingest-images", "finetune-roles", "diagnose-round"} <= _finished(output, "Cached")
    for table, frame in _tables(home).items():
        pd.testing.assert_frame_equal(frame, reference[table], check_exact=True, obj=table)
    assert _checkpoint_state(home, reference_files) == "complete"

    client = mlflow.tracking.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("asg-evolution").experiment_id])
    assert [(r.info.run_name, r.info.status) for r in runs] == [("round-0", "FINISHED")]
    assert runs[0].data.tags["asg.resumed"] == "true" and "evaluate.vqa_accuracy" in runs[0].data.metrics
    leftovers = sorted(p.name for p in home.glob("ckpt-*"))

    print("\nstage                  | killed at          | stages cached before the kill | checkpoint at round-0")
    for row in rows:
        print(f"{row['stage']:<22} | {row['killed_at']:<18} | {row['cached_before']:<29} | {row['checkpoint']}")
    print(f"after {len(rows)} kills: tables identical to the uninterrupted run, one MLflow run (FINISHED); "
          f"temporary checkpoint folders left by killed saves: {len(leftovers)}")
