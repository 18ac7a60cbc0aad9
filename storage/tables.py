"""Table verbs over LanceDB: connect, idempotent upserts, filtered reads.

Every stage writes with `upsert`: a merge on the table's deterministic key, optionally
deleting the stage's stale rows in the same commit (`replace_where`), so re-running a stage
converges to the same rows and never duplicates.

    db = connect(Settings.from_env())
    version = upsert(db, "votes", rows, replace_where="round_idx = 0")
    frame = read(db, "votes", where="round_idx = 0")
    frame = read(connect(settings, at={"votes": version}), "votes")  # exactly the rows of that version

A stage reads the tables the stages before it wrote at the versions they handed on (`connect(..., at=...)`), so
what it reads is what it was given, not whatever was written last.
"""

from __future__ import annotations

from datetime import timedelta

import lancedb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from storage.schemas import KEYS, SCHEMAS
from storage.settings import Settings


def connect(settings: Settings, at: dict[str, int] | None = None):
    """The store's LanceDB. With `at` (table -> version: what a stage was handed by the stages before it), reads of
    those tables see them at exactly those versions, whatever was written since; writes always go to the head."""
    db = lancedb.connect(settings.lancedb_uri, storage_options=settings.lancedb_options(),
                         read_consistency_interval=timedelta(0))
    return PinnedTables(db, at) if at else db


class PinnedTables:
    """A LanceDB connection whose reads of some tables are pinned at given versions (see `connect`)."""

    def __init__(self, db, versions: dict[str, int]):
        self.head = db
        self.versions = {name: int(v) for name, v in versions.items()}

    def list_tables(self):
        return self.head.list_tables()

    def open_table(self, name: str):
        table = self.head.open_table(name)
        if name in self.versions:
            table.checkout(self.versions[name])
        return table


def table_names(db) -> list[str]:
    """The tables the store lists (a table whose creation a kill interrupted is listed too: see `existing`)."""
    return list(db.list_tables().tables)


def existing(db, name: str):
    """The table, or None when it does not exist. A process killed inside `create_table` leaves a folder that
    LanceDB lists but cannot open (no first version yet): that table never held a row, so it counts as absent.
    LanceDB answers both with the same "was not found" error, so one open attempt decides (no listing)."""
    try:
        return db.open_table(name)
    except ValueError as exc:
        if "was not found" in str(exc):
            return None
        raise


def open_table(db, name: str):
    """The table at its head, for writing (created empty with its schema on first use, or when its creation was
    interrupted before its first version)."""
    if name not in SCHEMAS:
        raise ValueError(f"unknown table {name!r}; tables are {', '.join(SCHEMAS)}")
    db = db.head if isinstance(db, PinnedTables) else db
    table = existing(db, name)  # not `or`: a LanceDB table's truth value counts its rows, and an empty one is false
    return table if table is not None else db.create_table(name, schema=SCHEMAS[name], exist_ok=True)


def upsert(db, name: str, rows: list[dict] | pd.DataFrame | pa.Table, replace_where: str | None = None) -> int:
    """Merge rows on the table key; with `replace_where`, also delete matching rows not in `rows`. `rows` may be
    an Arrow table (what `storage.row_batches.RowBatches.table()` gives), which goes in without pandas.

    Returns the table version after the write.
    """
    table = open_table(db, name)
    schema = SCHEMAS[name]
    key = KEYS[name]
    if isinstance(rows, pa.Table) and rows.num_rows == 0:
        rows = []  # no rows (maybe no columns either): only the slice's deletion, if any
    if isinstance(rows, pa.Table):
        missing = set(schema.names) - set(rows.column_names)
        if missing:
            raise ValueError(f"rows for table {name!r} lack columns {sorted(missing)}")
        data = rows.select(schema.names).cast(schema)
        if pc.count_distinct(data[key]).as_py() != data.num_rows:
            counts = pc.value_counts(data[key])
            dupes = [c["values"] for c in counts.to_pylist() if c["counts"] > 1][:3]
            raise ValueError(f"rows for table {name!r} repeat keys, e.g. {dupes}")
    else:
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows, columns=schema.names)
        missing = set(schema.names) - set(frame.columns)
        if missing:
            raise ValueError(f"rows for table {name!r} lack columns {sorted(missing)}")
        if frame[key].duplicated().any():
            dupes = frame[key][frame[key].duplicated()].head(3).tolist()
            raise ValueError(f"rows for table {name!r} repeat keys, e.g. {dupes}")
        data = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    if len(data) == 0 and replace_where is None:
        return table.version
    if len(data) == 0:
        table.delete(replace_where)
        return table.version
    merge = table.merge_insert(key).when_matched_update_all().when_not_matched_insert_all()
    if replace_where is not None:
        merge = merge.when_not_matched_by_source_delete(replace_where)
    merge.execute(data)
    return table.version


def read(db, name: str, where: str | None = None, columns: list[str] | None = None,
         version: int | str | None = None) -> pd.DataFrame:
    """Rows of a table (empty frame with the schema's columns when the table does not exist); `version`, a
    table version or tag (e.g. "round-3"), reads the table as it was then."""
    table = existing(db, name)  # pinned at the version a stage was handed, for a `connect(..., at=...)` store
    if table is None:
        return pd.DataFrame(columns=columns or SCHEMAS[name].names)
    if version is not None:
        table.checkout(version)
    query = table.search()
    if where:
        query = query.where(where)
    if columns:
        query = query.select(columns)
    return query.limit(None).to_pandas() if hasattr(query, "limit") else query.to_pandas()


def count(db, name: str, where: str | None = None) -> int:
    table = existing(db, name)
    return 0 if table is None else table.count_rows(where)


def sql_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def round_tag(round_idx: int) -> str:
    return f"round-{round_idx}"


def tag_tables(db, tag: str, versions: dict[str, int]) -> None:
    """Point `tag` at the given version of each table (moved when it exists, so a re-run round re-tags)."""
    for name, version in sorted(versions.items()):
        table = open_table(db, name)
        if tag in table.tags.list():
            table.tags.update(tag, int(version))
        else:
            table.tags.create(tag, int(version))


def current_versions(db) -> dict[str, int]:
    """table -> its latest version, for every table of the store."""
    tables = {name: existing(db, name) for name in table_names(db)}
    return {name: int(table.version) for name, table in tables.items() if table is not None}


def tagged_versions(db, tag: str) -> dict[str, int]:
    """table -> the version `tag` points at, for every table that has the tag."""
    out = {}
    for name in table_names(db):
        table = existing(db, name)
        tags = table.tags.list() if table is not None else {}
        if tag in tags:
            out[name] = int(tags[tag]["version"])
    return out
