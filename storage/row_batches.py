"""`RowBatches`: rows bound for one table, held as Arrow record batches instead of Python dicts.

A stage that makes a row per item (the filter's decisions and examples) appends dicts one at a time; every
`batch_rows` of them become one Arrow record batch in the table's schema, so the stage holds its output at Arrow's
size (about a tenth of the dicts') whatever the pool. `upsert(db, name, batches.table())` writes them.

    >>> from storage.row_batches import RowBatches
    >>> rows = RowBatches("role_states", batch_rows=2)
    >>> for k in range(3):
    ...     rows.append({"state_id": f"r0:s{k}", "round_idx": 0, "name": f"s{k}", "value": float(k)})
    >>> len(rows), rows.table().num_rows, rows.table()["name"].to_pylist()
    (3, 3, ['s0', 's1', 's2'])
"""

from __future__ import annotations

import pyarrow as pa

from storage.schemas import SCHEMAS


class RowBatches:
    """Rows of table `name`, appended as dicts and kept as record batches of `batch_rows`."""

    def __init__(self, name: str, batch_rows: int = 4096):
        self.name, self.schema, self.batch_rows = name, SCHEMAS[name], batch_rows
        self._batches: list[pa.RecordBatch] = []
        self._pending: list[dict] = []

    def append(self, row: dict) -> None:
        self._pending.append(row)
        if len(self._pending) >= self.batch_rows:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            missing = set(self.schema.names) - set(self._pending[0])
            if missing:
                raise ValueError(f"rows for table {self.name!r} lack columns {sorted(missing)}")
            self._batches.append(pa.RecordBatch.from_pylist(self._pending, schema=self.schema))
            self._pending = []

    def table(self) -> pa.Table:
        """Every row so far, in the table's schema."""
        self._flush()
        return pa.Table.from_batches(self._batches, schema=self.schema)

    def __len__(self) -> int:
        return sum(b.num_rows for b in self._batches) + len(self._pending)
