"""Chaos: `asg round` SIGKILLed at a seeded random point inside each stage, then run again with the same arguments.

1. Stage by stage, each in a fresh home: the round is killed inside stage k, at a random fraction (seeded) of that
   stage's duration in an uninterrupted run (the killed run computes the same stages before it, so the kill lands
   where that fraction of the stage's work is done), then re-run. Invariants: right after the kill, no duplicate
   keys and no half-written checkpoint under the round's final name; after the re-run, every table identical to
   the uninterrupted run's, the finished stages `Cached`, the checkpoint complete, and exactly one MLflow run for
   the round, FINISHED (the re-run reopened the killed one). Prints a stage x outcome table; every stage must hold.
2. One home, one chain: run k resumes what runs 1..k-1 finished and is killed inside stage k; the run after the
   last kill ends with the uninterrupted run's tables and one FINISHED MLflow run.

    .venv/bin/python -m pytest -m slow tests/test_chaos.py -s
"""

from __future__ import annotations

import datetime
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
SIZE = ["--source", "world://unlabeled?n=24&seed=5", "--images", "24"]  # stages long enough to die inside


def _stamp(line: str) -> float | None:
    """Seconds since midnight of a Prefect log line ("05:40:12.345 | INFO | ..."): when the line was logged, not
    when it reached the pipe."""
    head = line.split(" ", 1)[0]
    try:
        h, m, rest = head.split(":")
        return int(h) * 3600 + int(m) * 60 + float(rest)
    except ValueError:
        return None


def _now() -> float:
    t = datetime.datetime.now()
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


def _task(line: str) -> str | None:
    if "Task run '" in line and "Finished in state" in line:
        return line.split("Task run '", 1)[1].split("'", 1)[0].rsplit("-", 1)[0]
    return None


def _run(home: Path, kill_after: str | None = None, delay_s: float = 0.0,
         size: tuple[str, ...] = ()) -> tuple[int, str, dict[str, float]]:
    """One `asg round`; with `kill_after`, SIGKILL `delay_s` after that task finished (by its log line's clock).
    Returns the exit code, the output and when each task finished (its log line's clock, seconds since midnight;
    "total": the process's wall time)."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *ROUND, *size], cwd=ROOT,
                            env={**_env(home), "PYTHONUNBUFFERED": "1"},
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
            name, stamp = _task(line), _stamp(line)
            if name and stamp is not None:
                finished.setdefault(name, stamp)
                if name == kill_after:
                    threading.Timer(max(0.0, delay_s - (_now() - stamp)), kill).start()

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    proc.wait(timeout=900)
    reader.join(timeout=10)
    finished["total"] = time.monotonic() - started
    return proc.returncode, "".join(lines), finished


def _no_duplicate_keys(home: Path) -> None:
    for table, frame in _tables(home).items():
        key = TABLES[table]
        assert not frame[key].duplicated().any(), f"{table}: duplicate {key} after a kill"


def _one_finished_mlflow_run(home: Path) -> None:
    client = mlflow.tracking.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("asg-evolution").experiment_id])
    assert [(r.info.run_name, r.info.status) for r in runs] == [("round-0", "FINISHED")], \
        [(r.info.run_name, r.info.status) for r in runs]
    assert "evaluate.vqa_accuracy" in runs[0].data.metrics


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
def test_a_round_killed_inside_each_stage_resumes_to_the_uninterrupted_result(tmp_path):
    code, output, reference_times = _run(tmp_path / "uninterrupted", size=tuple(SIZE))
    assert code == 0, output[-3000:]
    reference = _tables(tmp_path / "uninterrupted")
    reference_files = {p.name for p in (tmp_path / "uninterrupted" / "objects" / "checkpoints" / "round-0").iterdir()}
    rng = random.Random(SEED)
    rows, failures = [], []
    for stage, before in STAGES:
        duration = reference_times[stage] - reference_times[before]
        fraction = rng.uniform(0.1, 0.9)
        row = {"stage": stage, "killed_at": "-", "checkpoint": "-", "cached": "-", "rerun_share": "-",
               "outcome": "ok"}
        try:
            # Stages of this small round last 0.1-12 s and log lines arrive late by milliseconds: when the stage
            # ended before the kill, try again in a fresh home at a third of the delay, then at once.
            for attempt, share in enumerate((fraction, fraction / 3, 0.0)):
                home = tmp_path / f"{stage}-{attempt}"
                code, output, _ = _run(home, kill_after=before, delay_s=share * duration, size=tuple(SIZE))
                assert code == -signal.SIGKILL, f"not killed (exit {code})"
                done = _finished(output, "Completed")
                assert before in done, f"killed before {before} finished"
                if stage not in done:
                    break
            assert stage not in done, f"every kill missed the stage: finished {sorted(done)}"
            row["killed_at"] = f"{share:.0%} of {duration:.2f} s"
            _no_duplicate_keys(home)
            row["checkpoint"] = _checkpoint_state(home, reference_files)
            code, output, times = _run(home, size=tuple(SIZE))
            assert code == 0, f"re-run failed: {output[-2000:]}"
            cached = _finished(output, "Cached")
            row["cached"] = str(len(cached))
            row["rerun_share"] = f"{times['total'] / reference_times['total']:.0%}"
            assert before in cached and stage in _finished(output, "Completed"), "re-run did not resume at the stage"
            for table, frame in _tables(home).items():
                pd.testing.assert_frame_equal(frame, reference[table], check_exact=True, obj=table)
            assert _checkpoint_state(home, reference_files) == "complete"
            _one_finished_mlflow_run(home)
            assert not list(home.glob("ckpt-*")), "a killed save left its temporary folder"
        except AssertionError as exc:
            row["outcome"] = str(exc).splitlines()[0][:120] if str(exc) else "assertion failed"
            failures.append(stage)
        rows.append(row)

    print(f"\nuninterrupted round: {reference_times['total']:.0f} s (24 images, --quick, paper preset)")
    print("stage                  | killed at          | checkpoint after kill | stages cached | re-run / full | outcome")
    for r in rows:
        print(f"{r['stage']:<22} | {r['killed_at']:<18} | {r['checkpoint']:<21} | {r['cached']:<13} | "
              f"{r['rerun_share']:<13} | {r['outcome']}")
    print(f"{len(rows) - len(failures)}/{len(rows)} stages hold every invariant")
    assert not failures, failures


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
    landed = []
    for stage, before in STAGES:
        duration = reference_times[stage] - reference_times[before]
        code, output, _ = _run(home, kill_after=before, delay_s=rng.uniform(0.1, 0.5) * duration)
        if code == 0 and stage == STAGES[-1][0]:
            landed.append("nowhere (the round finished first)")
            break
        assert code == -signal.SIGKILL, f"{stage}: the run was not killed (exit {code})\n{output[-3000:]}"
        done = _finished(output, "Completed") | _finished(output, "Cached")
        assert before in done, f"killed before {before} finished"
        landed.append(next(s for s, _ in STAGES if s not in done))  # where the kill landed
        _no_duplicate_keys(home)
        _checkpoint_state(home, reference_files)
    print(f"\nthe chain's kills landed in: {', '.join(landed)}")

    code, output, _ = _run(home)
    assert code == 0, output[-3000:]
    assert "write-round-report" in _finished(output, "Completed")
    assert {"ingest-images", "finetune-roles", "diagnose-round"} <= _finished(output, "Cached")
    for table, frame in _tables(home).items():
        pd.testing.assert_frame_equal(frame, reference[table], check_exact=True, obj=table)
    assert _checkpoint_state(home, reference_files) == "complete"
    _one_finished_mlflow_run(home)
    assert not list(home.glob("ckpt-*")), "a killed save left its temporary folder"
