"""`asg experiment` killed with SIGKILL inside an arm's second round, then run again with the same arguments, resumes
there: the matched control's fine-tunes and evaluations and the first round of the preset arm come back `Cached`,
the interrupted round runs, and the report holds every arm and round once with the numbers of an uninterrupted
experiment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tests.conftest import SHIPPED_BASE
from tests.test_resume import ROOT, _env, _finished

EXPERIMENT = ["experiment", "--checkpoint", str(SHIPPED_BASE), "--rounds", "2", "--seeds", "0", "--no-ablations",
              "--arms", "verified", "--quick"]


def _run(home: Path, kill_after_subflows: int | None = None) -> tuple[int, str]:
    """The CLI in its own process group; SIGKILL once the n-th round flow of the experiment has begun and one of
    its stages has finished."""
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *EXPERIMENT], cwd=ROOT, env=_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines, rounds = [], 0
    for line in proc.stdout:
        lines.append(line)
        rounds += "Beginning subflow run" in line and "'asg-round'" in line
        if kill_after_subflows and rounds >= kill_after_subflows and "Task run 'ingest-images-" in line \
                and "Finished in state" in line:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=900)
    return proc.returncode, "".join(lines)


def _results(home: Path) -> list[tuple]:
    rows = json.loads((home / "experiment" / "results.json").read_text())
    timeless = [{k: v for k, v in r["metrics"].items() if k != "seconds"} for r in rows]  # wall time differs
    return sorted((r["arm"], r["seed"], r["round"], json.dumps(m, sort_keys=True)) for r, m in zip(rows, timeless))


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_a_killed_experiment_resumes_at_the_arm_and_round_it_died_in(tmp_path):
    code, output = _run(tmp_path / "uninterrupted")
    assert code == 0, output[-3000:]
    reference = _results(tmp_path / "uninterrupted")
    assert {(arm, rnd) for arm, _, rnd, _ in reference} == {(a, r) for a in ("control", "verified") for r in (0, 1, 2)}

    home = tmp_path / "killed"
    code, output = _run(home, kill_after_subflows=2)  # inside the verified arm's second round
    assert code == -signal.SIGKILL, output[-3000:]
    assert "control-finetune" in _finished(output, "Completed")

    code, output = _run(home)
    assert code == 0, output[-3000:]
    cached, computed = _finished(output, "Cached"), _finished(output, "Completed")
    assert {"control-finetune", "evaluate-checkpoint", "propose-questions", "solve-and-vote", "filter-examples",
            "finetune-roles"} <= cached
    assert "control-finetune" not in computed  # the control arm is not trained again
    assert {"propose-questions", "finetune-roles"} <= computed  # the interrupted round is
    assert _results(home) == reference
    # the killed round's MLflow run was reopened and finished, not left RUNNING beside a second one
    client = mlflow.tracking.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("asg-experiment").experiment_id])
    names = sorted(r.info.run_name for r in runs)
    assert len(names) == len(set(names)), names
    assert {r.info.status for r in runs} == {"FINISHED"}
