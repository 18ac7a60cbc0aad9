"""A tiny round of the default preset against rows stored from an earlier main (tests/data/expected_rows.json.gz):
a change of how the stages are wired (sharding, staging, configs, namespaces) must leave every row the same.

Images are compared by the SHA-256 of their PNG bytes; keys, text and integers exactly; floats to a relative 1e-4
(absolute 1e-5 near zero), because float32 kernels round differently on different CPUs (the rows were recorded on
one CPU, and a CI machine's entropies differ from them by about 1e-6 absolute, 7e-6 relative). After a change that is meant to change
behaviour, re-record the rows (and say why in the commit):

    ASG_RECORD_EXPECTED_ROWS=1 .venv/bin/python -m pytest tests/test_expected_rows.py
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
from pathlib import Path

import pytest

from flows.round import RoundConfig, round_flow
from storage.schemas import KEYS
from storage.settings import Settings
from storage.tables import connect, read
from tests.conftest import SHIPPED_BASE

EXPECTED = Path(__file__).parent / "data" / "expected_rows.json.gz"
# Everything a round with evaluation off writes, but the tables with run-specific content (none so far).
TABLES = ("images", "image_sources", "ingest_errors", "questions", "answers", "votes", "cross_checks", "specs",
          "generations", "scores", "tile_names", "compositions", "tile_verdicts", "filter_decisions",
          "training_examples", "role_states")
CONFIG = RoundConfig(source="world://unlabeled?n=16&seed=5", n_images=16, n_candidates=2, n_samples=3,
                     n_per_prompt=2, n_check_answers=2, finetune_steps={"solver": 3, "proposer": 2, "generator": 3},
                     batch_size=8, seed_scenes=20, evaluation="none", accept_reward=0.3, targeted_share=0.25,
                     targeted_per_prompt=3, seed=1,
                     # the categories the stored rows were made with (the default changed since, on purpose)
                     targeted_categories=("color_attr", "position", "counting", "color_attr", "two_object",
                                          "position"))


def _plain(value, home: str):
    if isinstance(value, (bytes, bytearray)):
        return "sha256:" + hashlib.sha256(value).hexdigest()
    if isinstance(value, str):
        return value.replace(home, "$ASG_HOME")
    if hasattr(value, "tolist"):
        return _plain(value.tolist(), home)
    if isinstance(value, (list, tuple)):
        return [_plain(v, home) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def _rows(db, home: Path) -> dict[str, list[dict]]:
    out = {}
    for table in TABLES:
        frame = read(db, table)
        frame = frame.sort_values(KEYS[table]) if len(frame) else frame
        out[table] = [{k: _plain(v, str(home)) for k, v in r.items()} for r in frame.to_dict("records")]
    return out


FLOAT_REL_TOL, FLOAT_ABS_TOL = 1e-4, 1e-5  # CPU-dependent float32 rounding; see the module docstring


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=FLOAT_REL_TOL, abs_tol=FLOAT_ABS_TOL)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _differences(expected: dict, got: dict) -> list[str]:
    problems = []
    for table in TABLES:
        want, have = expected.get(table, []), got[table]
        if len(want) != len(have):
            problems.append(f"{table}: {len(have)} rows, expected {len(want)}")
            continue
        for w, h in zip(want, have):
            for column in sorted(set(w) | set(h)):
                same = _same(w.get(column), h.get(column))
                if not same:
                    problems.append(f"{table} {w.get(KEYS[table])!r} column {column}: {h.get(column)!r}, "
                                    f"expected {w.get(column)!r}")
                    break
            if len(problems) > 20:
                return problems
    return problems


@pytest.mark.usefixtures("prefect_server")
def test_a_tiny_default_round_writes_exactly_the_stored_rows(asg_home):
    """Run in a store namespace (as `asg experiment` runs each arm): its rows and checkpoint stay there, and the
    process environment is not rewritten to get them there."""
    def ours() -> dict[str, str]:  # (mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI itself)
        return {k: v for k, v in os.environ.items() if k.startswith(("ASG_", "PREFECT_"))}

    environment = ours()
    result = round_flow(0, str(SHIPPED_BASE), CONFIG, namespace="arm-a")
    assert ours() == environment
    store = Settings.from_env()
    arm = store.within("arm-a")
    assert result["checkpoint"] == f"{arm.objects_uri}/checkpoints/round-0"
    assert (asg_home / "objects" / "arm-a" / "checkpoints" / "round-0" / "config.json").is_file()
    assert not (asg_home / "objects" / "checkpoints").exists()
    assert not {"images", "training_examples"} & set(connect(store).table_names())  # the store's own: none
    with pytest.raises(ValueError, match="store namespace '../x'"):
        store.within("../x")
    got = _rows(connect(arm), asg_home)
    assert sum(len(rows) for rows in got.values()) > 500
    if os.environ.get("ASG_RECORD_EXPECTED_ROWS"):
        EXPECTED.write_bytes(gzip.compress(json.dumps(got, sort_keys=True).encode(), mtime=0))
        pytest.skip(f"recorded {EXPECTED}")
    expected = json.loads(gzip.decompress(EXPECTED.read_bytes()))
    problems = _differences(expected, got)
    assert not problems, "rows differ from tests/data/expected_rows.json.gz:\n" + "\n".join(problems)


def test_the_float_tolerance_absorbs_cpu_rounding_but_not_a_change():
    assert _same(1.1285803318023682, 1.1285816431045532)  # seen between two CPUs
    assert _same([0.18689295649528503], [0.1868918538093567])
    assert not _same(1.1285803, 1.1287)  # a change of 1.7e-4: a real difference
    assert not _same(0.0, 1e-4)
    assert not _same("a", "b") and not _same([1.0], [1.0, 1.0])
