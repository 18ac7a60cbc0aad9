"""Local resume: `asg round` killed with SIGKILL in its fine-tune stage, then run again with the same arguments,
reuses every stage the killed run finished (they come back `Cached`) and ends with exactly the tables of an
uninterrupted run; `--fresh` recomputes them all. The stage cache keys on the round's inputs, code and store
(tasks/stage_cache.py), never on a flow run id."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from storage.settings import Settings
from storage.tables import connect, read
from tests.conftest import SHIPPED_BASE

ROOT = Path(__file__).resolve().parent.parent
TABLES = {"images": "image_id", "questions": "question_id", "answers": "answer_id", "votes": "question_id",
          "specs": "spec_id", "generations": "generation_id", "scores": "generation_id",
          "filter_decisions": "item_id", "training_examples": "example_id", "cross_checks": "question_id"}
ROUND = ["round", "--round-idx", "0", "--checkpoint", str(SHIPPED_BASE), "--source", "world://unlabeled?n=12&seed=5",
         "--images", "12", "--quick", "--preset", "paper"]  # the stage list below is the paper preset's
BEFORE_FINETUNE = ("ingest-images", "propose-questions", "solve-and-vote", "cross-check-questions",
                   "generate-images", "score-generations", "filter-examples")


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "ASG_HOME": str(home), "PREFECT_HOME": str(home / "prefect"),
           "PREFECT_TASKS_REFRESH_CACHE": "false"}
    for key in ("PREFECT_API_URL", "ASG_LANCEDB_URI", "ASG_OBJECTS_URI", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    return env


def _run(home: Path, *extra: str, kill_on: str | None = None) -> tuple[int, str, float]:
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *ROUND, *extra], cwd=ROOT, env=_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []

    def read_output() -> None:
        for line in proc.stdout:
            lines.append(line)
            if kill_on and kill_on in line:
                time.sleep(0.3)  # the next stage (fine-tune) has begun
                os.killpg(proc.pid, signal.SIGKILL)

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    proc.wait(timeout=900)
    reader.join(timeout=10)
    return proc.returncode, "".join(lines), time.monotonic() - started


def _tables(home: Path) -> dict[str, pd.DataFrame]:
    settings = Settings(home=home, lancedb_uri=str(home / "lancedb"), objects_uri=str(home / "objects"),
                        mlflow_uri="")
    db = connect(settings)
    return {t: read(db, t).drop(columns=["png"], errors="ignore").sort_values(k).reset_index(drop=True)
            for t, k in TABLES.items()}


def _finished(output: str, state: str) -> set[str]:
    return {line.split("Task run '", 1)[1].split("'", 1)[0].rsplit("-", 1)[0] for line in output.splitlines()
            if "Task run '" in line and f"Finished in state {state}" in line}


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_round_killed_in_finetune_resumes_from_there_with_the_same_tables(tmp_path):
    code, reference_output, full_s = _run(tmp_path / "uninterrupted")
    assert code == 0, reference_output[-3000:]
    reference = _tables(tmp_path / "uninterrupted")

    home = tmp_path / "killed"
    code, output, _ = _run(home, kill_on="Task run 'filter-examples-")
    assert code == -signal.SIGKILL, output[-3000:]
    assert set(BEFORE_FINETUNE) <= _finished(output, "Completed")
    assert "finetune-roles" not in _finished(output, "Completed")

    code, output, resumed_s = _run(home)
    assert code == 0, output[-3000:]
    assert set(BEFORE_FINETUNE) <= _finished(output, "Cached")  # reused, not recomputed
    assert {"finetune-roles", "evaluate-checkpoint", "diagnose-round"} <= _finished(output, "Completed")
    for table, frame in _tables(home).items():
        pd.testing.assert_frame_equal(frame, reference[table], check_exact=True, obj=table)
    print(f"full round {full_s:.0f} s, re-run after a kill in fine-tune {resumed_s:.0f} s "
          f"({resumed_s / full_s:.0%}; both include the process's temporary Prefect server)")

    code, output, _ = _run(home, "--fresh")
    assert code == 0 and not _finished(output, "Cached")
    for table, frame in _tables(home).items():
        pd.testing.assert_frame_equal(frame, reference[table], check_exact=True, obj=table)


def test_the_stage_cache_key_follows_inputs_code_store_and_checkpoints(asg_home, tmp_path, monkeypatch):
    import shutil

    from tasks.stage_cache import RoundInputs

    policy = RoundInputs()
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(SHIPPED_BASE, checkpoint)
    flow = {"round_idx": 0, "checkpoint": str(checkpoint), "config": {"n_images": 12}}
    key = policy.compute_key(None, {"round_idx": 0}, flow)
    assert key == policy.compute_key(None, {"round_idx": 0}, {**flow, "inject_fault": {"stage": "x"}})
    assert key != policy.compute_key(None, {"round_idx": 1}, flow)
    assert key != policy.compute_key(None, {"round_idx": 0}, {**flow, "config": {"n_images": 13}})
    (checkpoint / "card.json").write_text("{}")  # the checkpoint was rewritten under the same name
    assert key != policy.compute_key(None, {"round_idx": 0}, flow)
    key = policy.compute_key(None, {"round_idx": 0}, flow)
    monkeypatch.setenv("ASG_OBJECTS_URI", str(tmp_path / "another-store"))  # another store, another id
    assert key != policy.compute_key(None, {"round_idx": 0}, flow)
    output = tmp_path / "out"  # what a stage writes is not an input: writing it leaves the key alone
    key = policy.compute_key(None, {"round_idx": 0, "output_uri": str(output)}, flow)
    shutil.copytree(SHIPPED_BASE, output)
    assert key == policy.compute_key(None, {"round_idx": 0, "output_uri": str(output)}, flow)
    assert key != policy.compute_key(None, {"round_idx": 0, "checkpoint_uri": str(output)}, flow)


def test_a_run_key_reopens_its_mlflow_run_until_a_fresh_run_starts_a_new_one(asg_home):
    import mlflow

    from flows.tracking import Tracker
    from storage.settings import Settings

    tracker = Tracker(Settings.from_env().mlflow_uri, "resume-keys")
    with tracker.run("round-0", resume_key="k1") as first:
        tracker.log_metrics({"a": 1.0})
    with tracker.run("round-0", resume_key="k1") as again:  # the re-run of a crashed (or finished) round
        tracker.log_metrics({"b": 2.0})
    with tracker.run("round-0", resume_key="k2") as other:
        pass
    with tracker.run("round-0", resume_key="k1", fresh=True) as fresh:
        pass
    with tracker.run("round-0", resume_key="k1") as latest:
        pass
    assert again == first and other != first and fresh not in (first, other) and latest == fresh
    run = mlflow.get_run(first)
    assert run.data.metrics == {"a": 1.0, "b": 2.0} and run.data.tags["asg.resumed"] == "true"
    assert run.info.status == "FINISHED"
    assert len(mlflow.search_runs(experiment_names=["resume-keys"])) == 3
