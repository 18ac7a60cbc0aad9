"""Benchmark: the dashboard's Questions filters on 1 million `qa_items` rows (LanceDB, local disk).

    .venv/bin/python benchmarks/dashboard_filters.py [--rows 1000000]

Fills a temporary LanceDB with synthetic rows in the real schema (10 rounds), then times each
filter the Questions view issues for one page: count_rows(where) plus a 25-row page at offset 0
and at a deep offset, best of 3. Writes benchmarks/results/dashboard_filters.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from dashboards.question_filters import QuestionFilter
from dashboards.store import DashboardStore
from storage.schemas import SCHEMAS
from storage.settings import Settings

FAMILIES = ["color", "count", "exist", "relation", "shape"]
BUCKETS = ["easy", "medium", "hard", "unsolvable"]


def synthetic_rows(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    fam = rng.integers(0, 5, n)
    colors = np.array(["red", "green", "blue", "yellow", "purple", "cyan"])
    frame = pd.DataFrame({
        "question_id": [f"r{i % 10}:{i:08d}:k0" for i in range(n)], "round_idx": np.arange(n) % 10,
        "image_id": [f"{i:064x}" for i in range(n)],
        "question": [f"what {FAMILIES[f]} is the {colors[i % 6]} object {i % 97} ?" for i, f in enumerate(fam)],
        "family": np.array(FAMILIES)[fam], "validator_a": "a", "validator_b": "b", "majority": "a",
        "majority_fraction": rng.choice([3 / 7, 4 / 7, 5 / 7, 6 / 7, 1.0], n), "answer_entropy": rng.random(n),
        "ste_raw": rng.random(n) * 2, "ste_difficulty": rng.random(n), "theta_easy": 0.3,
        "bucket": np.array(BUCKETS)[rng.integers(0, 4, n)], "informativeness": rng.random(n),
        "proposer_reward": rng.random(n), "mean_solver_reward": rng.random(n), "kept": rng.random(n) < 0.3,
        "reason": np.array(["medium", "hard", "easy", "low-agreement"])[rng.integers(0, 4, n)],
        "answers_json": json.dumps([{"framing": "canonical", "text": "a", "mapped": "a", "reward": 1.0}] * 7)})
    return pa.Table.from_pandas(frame, schema=SCHEMAS["qa_items"], preserve_index=False)


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    import lancedb

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), lancedb_uri=f"{tmp}/db", objects_uri="", mlflow_uri="")
        start = time.perf_counter()
        db = lancedb.connect(settings.lancedb_uri)
        table = db.create_table("qa_items", schema=SCHEMAS["qa_items"])
        for lo in range(0, args.rows, 250_000):
            table.add(synthetic_rows(min(250_000, args.rows - lo), seed=lo).slice(0))
        print(f"wrote {table.count_rows():,} rows in {time.perf_counter() - start:.1f} s")
        store = DashboardStore(settings)
        filters = {
            "round only": QuestionFilter(round_idx=3),
            "round + bucket": QuestionFilter(round_idx=3, buckets=("medium", "hard")),
            "round + family + STE band + kept": QuestionFilter(round_idx=3, families=("relation",),
                                                               ste_band=(0.67, 1.01), kept=True),
            "round + majority band + reason": QuestionFilter(round_idx=3, majority_band=(0.5, 0.9),
                                                             reasons=("hard",)),
            "round + free text": QuestionFilter(round_idx=3, text="green object 42"),
        }
        results = {}
        for name, f in filters.items():
            count = best_of(lambda: store.count_questions(f))
            first = best_of(lambda: store.question_page(f, 0))
            deep = best_of(lambda: store.question_page(f, 200))
            results[name] = {"matches": store.count_questions(f), "count_s": count, "page0_s": first,
                             "page200_s": deep, "total_s": count + first}
            print(f"{name:<36} {results[name]['matches']:>8,} rows   count {count * 1e3:6.0f} ms   "
                  f"page {first * 1e3:6.0f} ms   page 200 {deep * 1e3:6.0f} ms")
    out = Path(__file__).parent / "results" / "dashboard_filters.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rows": args.rows, "filters": results}, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
