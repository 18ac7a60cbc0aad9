"""Benchmark: LanceDB write throughput of the stages' batched upserts, by batch size.

    .venv/bin/python benchmarks/lancedb_writes.py [--rows 200000]

Writes `answers` rows (the widest rollout table per item: text, floats, a list of entropies) with
`storage.tables.upsert` into a fresh local table, in batches of 1k, 10k and 100k rows: first as
inserts into a growing table, then the same keys again (merge updates, what a re-run does). Prints
rows per second side by side; filter latency on 1M rows is benchmarks/dashboard_filters.py.
Writes benchmarks/results/lancedb_writes.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from storage.settings import Settings
from storage.tables import connect, count, upsert

ROOT = Path(__file__).resolve().parent.parent


def answers(start: int, n: int, rng: np.random.Generator) -> pd.DataFrame:
    ids = np.arange(start, start + n)
    return pd.DataFrame({
        "answer_id": [f"r0:q{i // 7:08d}:s{i % 7}" for i in ids], "question_id": [f"r0:q{i // 7:08d}" for i in ids],
        "round_idx": 0, "sample_idx": ids % 7, "framing": "canonical", "temperature": 1.0, "top_p": 0.95,
        "text": "two", "normalized": "two", "mapped": "two",
        "token_entropies": [list(rng.random(2)) for _ in ids], "is_majority": True, "answer_share": 0.7,
        "reward": 0.5, "shaped_reward": 0.4})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results = []
    for batch in (1_000, 10_000, 100_000):
        home = Path(tempfile.mkdtemp(prefix="asg-bench-lance-"))
        db = connect(Settings(home=home, lancedb_uri=str(home / "db"), objects_uri=str(home / "o"), mlflow_uri=""))
        frames = [answers(s, min(batch, args.rows - s), rng) for s in range(0, args.rows, batch)]
        for mode in ("insert", "update"):
            clock = time.perf_counter()
            for frame in frames:
                upsert(db, "answers", frame)
            seconds = time.perf_counter() - clock
            assert count(db, "answers") == args.rows  # updates never duplicate
            results.append({"batch_rows": batch, "mode": mode, "rows": args.rows, "seconds": round(seconds, 2),
                            "rows_per_second": round(args.rows / seconds)})
            print(f"batch {batch:>7,} {mode:<6} {args.rows / seconds:>10,.0f} rows/s  ({seconds:.1f} s)")
    small = next(r for r in results if r["batch_rows"] == 1_000 and r["mode"] == "insert")
    large = next(r for r in results if r["batch_rows"] == 100_000 and r["mode"] == "insert")
    print(f"100k-row batches write {large['rows_per_second'] / small['rows_per_second']:.1f}x faster than 1k-row batches")
    (ROOT / "benchmarks" / "results" / "lancedb_writes.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
