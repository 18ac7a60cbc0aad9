"""`SliceWriter`: a stage's rows for one slice of a table (`round_idx = R`), written as they come.

A stage that makes a row per item appends dicts; every `write_rows` of them are upserted (as Arrow, through
`storage.row_batches.RowBatches`), so the stage holds at most that many rows whatever the pool. The first write
replaces the slice (the stale rows of an earlier run go in the same commit), later ones merge on the key, and
`close()` returns the table's version. A run killed between writes leaves part of the slice; the stage's re-run
replaces it whole, so every re-run still converges to the same rows, and keys never repeat (every write merges on
the key).

    writer = SliceWriter(db, "training_examples", "round_idx = 3")
    for row in rows:
        writer.append(row)
    version = writer.close()
"""

from __future__ import annotations

from storage.row_batches import RowBatches
from storage.tables import upsert


class SliceWriter:
    """Rows of table `name` whose slice is `where`, upserted every `write_rows` appends."""

    def __init__(self, db, name: str, where: str, write_rows: int = 65536):
        self.db, self.name, self.where, self.write_rows = db, name, where, write_rows
        self._buffer = RowBatches(name)
        self.written, self.version = 0, None

    def append(self, row: dict) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= self.write_rows:
            self.flush()

    def flush(self) -> None:
        if not len(self._buffer):
            return
        first = self.version is None
        self.version = upsert(self.db, self.name, self._buffer.table(), replace_where=self.where if first else None)
        self.written += len(self._buffer)
        self._buffer = RowBatches(self.name)

    def close(self) -> int:
        """Write what is left and return the table's version (a slice with no rows at all is emptied)."""
        self.flush()
        if self.version is None:
            self.version = upsert(self.db, self.name, [], replace_where=self.where)
        return self.version

    def __len__(self) -> int:
        return self.written + len(self._buffer)
