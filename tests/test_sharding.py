"""Sharded rollout stages: the rows a round writes do not depend on how many shards it is split into
or which worker runs them. A 2-worker Dask LocalCluster (real worker processes on 127.0.0.1) against
the in-process runner, a worker killed in the middle of a shard, and more shards than images."""

from __future__ import annotations

import shutil
import tempfile

import numpy as np
import pandas as pd
import pytest
from prefect import flow

from flows.round import RoundConfig, rollout_stages
from flows.task_runners import task_runner
from storage.settings import Settings
from storage.tables import connect, read
from tests.conftest import SHIPPED_BASE

pytestmark = pytest.mark.integration

ROLLOUT_TABLES = {"images": "image_id", "questions": "question_id", "answers": "answer_id", "votes": "question_id",
                  "specs": "spec_id", "generations": "generation_id", "scores": "generation_id"}


def _config(n_images: int = 16, **overrides) -> RoundConfig:
    fields = dict(source=f"world://unlabeled?n={n_images}&seed=7", n_images=n_images, n_candidates=2, n_samples=3,
                  n_per_prompt=2, n_check_answers=2, evaluation="none", preset="paper")
    return RoundConfig(**{**fields, **overrides})


@flow(name="asg-test-rollouts")
def rollouts(config: RoundConfig, inject_fault: dict | None = None) -> list:
    return [(s.stage, s.rows, s.metrics) for s in rollout_stages(0, str(SHIPPED_BASE), config)]


def _tables() -> dict[str, pd.DataFrame]:
    db = connect(Settings.from_env())
    out = {}
    for table, key in ROLLOUT_TABLES.items():
        frame = read(db, table)
        out[table] = frame.sort_values(key).reset_index(drop=True)
    return out


def _run(asg_home_dir, monkeypatch, config, runner, **params):
    monkeypatch.setenv("ASG_HOME", str(asg_home_dir))
    result = rollouts.with_options(task_runner=runner)(config, **params)
    return result, _tables()


def _assert_same_rows(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    """Same keys, texts, images, votes and decisions exactly; floats up to the last digits, which CPU kernels
    round differently with 1 thread per worker than with 2 in one process (entropies differ by ~1e-6)."""
    for table in ROLLOUT_TABLES:
        left, right = a[table], b[table]
        assert len(left) == len(right) > 0, table
        assert list(left.columns) == list(right.columns), table
        for column in left.columns:
            x, y = left[column], right[column]
            if pd.api.types.is_float_dtype(x):
                assert np.allclose(x, y, rtol=1e-4, atol=1e-6), (table, column)
            elif len(x) and isinstance(x.iloc[0], (list, np.ndarray)):
                assert [len(v) for v in x] == [len(v) for v in y], (table, column)
                assert np.allclose(np.concatenate([np.asarray(v, float) for v in x] or [[]]),
                                   np.concatenate([np.asarray(v, float) for v in y] or [[]]), rtol=1e-4, atol=1e-6)
            else:
                assert x.tolist() == y.tolist(), (table, column)


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """The reference: every stage in one shard, in the flow's own process."""
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("single") / "asg_home"
        result, tables = _run(home, mp, _config(), task_runner("inprocess"))
    return result, tables


@pytest.mark.usefixtures("prefect_server")
def test_two_dask_workers_write_the_single_process_rows(single_process, tmp_path, monkeypatch):
    from prefect_dask import DaskTaskRunner  # noqa: F401 - the optional runner is installed

    reference_result, reference = single_process
    result, tables = _run(tmp_path / "dask", monkeypatch, _config(shards=2), task_runner("dask", workers=2))
    _assert_same_rows(tables, reference)
    ran = {stage: (rows, metrics) for stage, rows, metrics in result}
    for stage, rows, metrics in reference_result:
        assert ran[stage][0] == rows, stage
        assert metrics["shards"] == 1 and ran[stage][1]["shards"] == 2
        shared = sorted(k for k in metrics if not k.startswith("shard") and k != "seconds")
        assert np.allclose([ran[stage][1][k] for k in shared], [metrics[k] for k in shared], rtol=1e-4), stage
    # the shards ran in two worker processes, each of which loaded the checkpoint once
    assert max(m["shard_processes"] for _, _, m in result) == 2
    assert max(m["shard_backbone_loads_max"] for _, _, m in result) == 1


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_two_ray_workers_write_the_single_process_rows(single_process, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="the Ray runner is the optional extra asg[ray]")
    reference_result, reference = single_process
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    try:
        result, tables = _run(tmp_path / "ray-home", monkeypatch, _config(shards=2), task_runner("ray", workers=2))
    finally:
        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    _assert_same_rows(tables, reference)
    ran = {stage: rows for stage, rows, _ in result}
    assert ran == {stage: rows for stage, rows, _ in reference_result}
    assert max(m["shard_processes"] for _, _, m in result) == 2  # two Ray worker processes ran shards
    assert max(m["shard_backbone_loads_max"] for _, _, m in result) == 1


@pytest.mark.usefixtures("prefect_server")
def test_worker_killed_mid_shard_is_rescheduled_without_duplicates(single_process, tmp_path, monkeypatch):
    _, reference = single_process
    marker = tmp_path / "kill-once"
    marker.write_text("the first solve shard to see this kills its worker")
    result, tables = _run(tmp_path / "killed", monkeypatch, _config(shards=2), task_runner("dask", workers=2),
                          inject_fault={"stage": "solve-shard", "while_exists": str(marker), "kill_worker": True})
    assert not marker.exists()  # a worker did die
    _assert_same_rows(tables, reference)


@pytest.mark.usefixtures("prefect_server")
def test_a_shard_that_fails_once_is_retried_and_the_stage_ends_with_the_same_rows(single_process, tmp_path,
                                                                                  monkeypatch):
    _, reference = single_process
    marker = tmp_path / "fail-once"
    marker.write_text("the first solve shard to see this raises once")
    result, tables = _run(tmp_path / "retried", monkeypatch, _config(shards=2), task_runner("inprocess"),
                          inject_fault={"stage": "solve-shard", "while_exists": str(marker), "once": True})
    assert not marker.exists()  # a shard did fail
    _assert_same_rows(tables, reference)
    assert [stage for stage, _, _ in result] == [stage for stage, _, _ in single_process[0]]


@pytest.mark.usefixtures("prefect_server")
def test_more_shards_than_images_and_reruns_write_the_same_rows(tmp_path, monkeypatch):
    config = _config(n_images=3, n_per_prompt=1)
    _, one = _run(tmp_path / "one", monkeypatch, config, task_runner("inprocess"))
    _, many = _run(tmp_path / "many", monkeypatch, config.model_copy(update={"shards": 7}), task_runner("inprocess"))
    _assert_same_rows(many, one)
    files = sorted((tmp_path / "many" / "objects" / "shards" / "round-0" / "solve" / "votes" / "of-7").glob("*"))
    assert len(files) == 7  # every shard ran and staged a file, the empty ones too
    # a crashed-and-rerun round: the same rows, no duplicates
    _, again = _run(tmp_path / "many", monkeypatch, config.model_copy(update={"shards": 7}), task_runner("inprocess"))
    _assert_same_rows(again, one)
