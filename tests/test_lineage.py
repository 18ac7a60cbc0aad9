"""Lineage: a round's MLflow run records its code version, Prefect flow run, checkpoint and table versions; every
LanceDB table is tagged `round-<R>`; re-reading the tables at that tag reproduces the round's fine-tune inputs
exactly, after later writes changed them; `asg lineage` prints it all."""

import re
import subprocess

import numpy as np
import pytest

from flows.cli import main
from flows.lineage import round_lineage
from tasks.code_version import REPO, code_version
from flows.round import RoundConfig, round_flow
from storage.settings import Settings
from storage.tables import connect, current_versions, tagged_versions, upsert
from tasks.finetune import stored_examples
from tests.conftest import SHIPPED_BASE


def _config() -> RoundConfig:
    return RoundConfig(source="world://unlabeled?n=12&seed=5", n_images=12, n_candidates=2, n_samples=3,
                       n_per_prompt=2, n_check_answers=2, finetune_steps={"solver": 3, "proposer": 2, "generator": 3},
                       batch_size=8, seed_scenes=20, evaluation="none", accept_reward=0.3, preset="paper",
                       diagnose=False)


def _as_tuples(examples):
    return [(e.kind, e.prompt, e.target, e.framing, e.weight,
             None if e.image is None else e.image.tobytes(),
             None if e.target_image is None else e.target_image.tobytes()) for e in examples]


def test_code_version_is_the_checkouts_commit():
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty-[0-9a-f]{12})?", code_version()) and code_version().startswith(head)


@pytest.mark.usefixtures("prefect_server")
def test_a_rounds_lineage_is_recorded_and_its_finetune_inputs_reread_exactly(asg_home, capsys):
    result = round_flow(0, str(SHIPPED_BASE), _config())
    # evaluation and diagnose off: the round trains and records, but judges nothing against the hidden scenes
    assert any(k.startswith("finetune.") for k in result) and not any(k.startswith("diagnose.") for k in result)
    settings = Settings.from_env()
    db = connect(settings)
    lineage = round_lineage(0, "asg-evolution", settings)
    assert lineage["mlflow_status"] == "FINISHED"
    assert lineage["code_version"] == code_version()
    assert re.fullmatch(r"[0-9a-f-]{36}", lineage["prefect_flow_run_id"])
    assert lineage["checkpoint_uri"] == result["checkpoint"]
    assert lineage["table_versions"] == lineage["tagged_versions"] == current_versions(db)
    assert {"images", "training_examples", "generations", "scores"} <= set(lineage["tagged_versions"])

    inputs = {role: _as_tuples(stored_examples(db, 0, role)) for role in ("solver", "proposer", "generator")}
    assert all(inputs.values())
    # Later writes change the round's rows: the examples are gone and a generation's image is replaced.
    upsert(db, "training_examples", [], replace_where="round_idx = 0")
    assert not stored_examples(db, 0, "solver")
    assert current_versions(db)["training_examples"] > lineage["tagged_versions"]["training_examples"]
    # Read at the round's tag, every role's fine-tune inputs come back exactly, images included.
    for role, expected in inputs.items():
        assert _as_tuples(stored_examples(db, 0, role, version="round-0")) == expected
    assert tagged_versions(db, "round-0") == lineage["tagged_versions"]

    assert main(["lineage", "--round-idx", "0"]) == 0
    out = capsys.readouterr().out
    assert lineage["code_version"] in out and lineage["prefect_flow_run_id"] in out
    assert result["checkpoint"] in out and "training_examples" in out
    assert main(["lineage", "--round-idx", "7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"asg: no MLflow run of round 7 in experiment 'asg-evolution' at {settings.mlflow_uri}"]


@pytest.mark.usefixtures("prefect_server")
def test_a_rerun_round_moves_its_tag(asg_home):
    round_flow(0, str(SHIPPED_BASE), _config())
    db = connect(Settings.from_env())
    first = tagged_versions(db, "round-0")
    round_flow(0, str(SHIPPED_BASE), _config())
    second = tagged_versions(db, "round-0")
    assert second == current_versions(db) and second["training_examples"] > first["training_examples"]
    assert np.all([second[t] >= first[t] for t in first])
