"""Benchmark: how much memory a process keeps after writing rows into LanceDB, by how much it wrote.

    .venv/bin/python benchmarks/lancedb_retained_memory.py             # 4,000 vs 40,000 rows of 3 KB
    MALLOC_ARENA_MAX=2 .venv/bin/python benchmarks/lancedb_retained_memory.py

Each size runs in a fresh child process. The child merges rows of 3 KB of bytes (the size of a stored PNG) into one
table, 4,000 rows per write as a round's merges do. Then it drops every reference, returns Arrow's free pages and
runs `malloc_trim`, as `tasks/freed_memory.py` does after each stage. It prints RSS before the writes, after them,
and after reading the table back three times. The difference between the sizes is memory that scales with what a
round wrote: issue 16's baseline growth from a 1k to a 20k round.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def child(n: int) -> dict:
    import gc
    import tempfile
    from datetime import timedelta

    import lancedb
    import numpy as np
    import psutil
    import pyarrow as pa

    from tasks.freed_memory import release_freed_memory

    process = psutil.Process()

    def settled_mb() -> int:
        gc.collect()
        release_freed_memory()
        return round(process.memory_info().rss / 2**20)

    uri, rng = tempfile.mkdtemp(prefix="asg-lance-retained-"), np.random.default_rng(0)
    out = {"rows": n, "start_mb": settled_mb()}
    for k in range(0, n, 4000):
        db = lancedb.connect(uri, read_consistency_interval=timedelta(0))
        part = pa.table({"id": [f"g{i:07d}" for i in range(k, k + 4000)],
                         "png": [rng.bytes(3000) for _ in range(4000)], "x": rng.random(4000)})
        if k == 0:
            db.create_table("g", part)
        else:
            db.open_table("g").merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(part)
        del part, db
    out["after_writes_mb"] = settled_mb()
    for _ in range(3):
        table = lancedb.connect(uri, read_consistency_interval=timedelta(0)).open_table("g")
        frame = table.search().select(["id", "x"]).limit(None).to_pandas()
        for start in range(0, n, 2000):
            ids = ", ".join(repr(f"g{i:07d}") for i in range(start, start + 50))
            frame = table.search().where(f"id IN ({ids})").select(["id", "png"]).limit(None).to_pandas()
        del table, frame
    out["after_reads_mb"] = settled_mb()
    return out


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(int(sys.argv[2]))))
        return
    rows = [json.loads(subprocess.run([sys.executable, __file__, "--child", str(n)], check=True, capture_output=True,
                                      text=True).stdout.strip().splitlines()[-1]) for n in (4000, 40000)]
    for r in rows:
        print(f"{r['rows']:>6} rows x 3 KB: start {r['start_mb']} MB, after writes {r['after_writes_mb']} MB, "
              f"after reads {r['after_reads_mb']} MB")
    small, large = rows
    print(f"x10 rows written: {large['after_writes_mb'] - small['after_writes_mb']:+d} MB kept after the writes, "
          f"{large['after_reads_mb'] - small['after_reads_mb']:+d} MB after the reads")


if __name__ == "__main__":
    main()
