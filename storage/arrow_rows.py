"""`ArrowRows`: a shard's rows for one table, turned into Arrow a chunk at a time.

A rollout stage's shard makes its rows chunk by chunk (1,024 questions, images or specs at a time). Held as Python
dicts until the merge, a 20k-image round's answers alone are 160k dicts; held as Arrow they take about a tenth of
that, and the merge sorts and upserts them without ever making dicts again (`tasks/sharded_stage.StagedRows.table`).
Unlike `storage.row_batches.RowBatches`, the schema is inferred, since a shard's rows may carry columns its table
does not store (the merge drops or uses them); chunks whose inferred types differ (an all-`None` column, integer
and float values) are promoted when the chunks are joined.

    >>> from storage.arrow_rows import ArrowRows
    >>> rows = ArrowRows()
    >>> rows.extend([{"id": "a", "x": 1}])
    >>> rows.extend([{"id": "b", "x": 0.5}, {"id": "c", "x": None}])
    >>> table = rows.table()
    >>> len(rows), table.num_rows, str(table.schema.field("x").type), table["x"].to_pylist()
    (3, 3, 'double', [1.0, 0.5, None])
    >>> ArrowRows().table().num_columns
    0
"""

from __future__ import annotations

import pyarrow as pa


class ArrowRows:
    """Rows appended a chunk of dicts at a time, kept as one Arrow table per chunk."""

    def __init__(self) -> None:
        self._tables: list[pa.Table] = []

    def extend(self, rows: list[dict]) -> None:
        if rows:
            self._tables.append(pa.Table.from_pylist(rows))

    def table(self) -> pa.Table:
        """Every row so far (an empty table without columns for none)."""
        if not self._tables:
            return pa.table({})
        return pa.concat_tables(self._tables, promote_options="permissive")

    def __len__(self) -> int:
        return sum(t.num_rows for t in self._tables)
