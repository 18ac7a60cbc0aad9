"""Staging files of sharded stages: one Parquet file per (round, stage, table, shard).

A shard task writes its rows here instead of into LanceDB, so any number of workers write in
parallel without contending for a table commit; the stage's merge step then reads the shards back
and makes the one idempotent `upsert` into LanceDB. A file is replaced whole (written to a
temporary name and renamed locally; a single PUT on s3://), so re-running a shard after a crash
leaves exactly one copy of its rows.

    objects_uri/shards/round-3/solve/answers/of-4/shard-00001.parquet
"""

from __future__ import annotations

import os
import uuid
from typing import Iterator

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from storage.settings import Settings


def shard_root(settings: Settings, round_idx: int) -> str:
    """The staging folder of a round (round_idx -1: ingestion, which belongs to no round)."""
    return f"{settings.objects_uri.rstrip('/')}/shards/{f'round-{round_idx}' if round_idx >= 0 else 'ingest'}"


def shard_path(settings: Settings, round_idx: int, stage: str, table: str, shard_idx: int, n_shards: int) -> str:
    return f"{shard_root(settings, round_idx)}/{stage}/{table}/of-{n_shards}/shard-{shard_idx:05d}.parquet"


def rows_table(rows: list[dict] | pa.Table) -> pa.Table:
    """The Arrow table of a shard's rows (an empty table without columns for none): what a staging file holds.
    A shard that already made Arrow (`storage.arrow_rows.ArrowRows`) passes it through."""
    if isinstance(rows, pa.Table):
        return rows
    return pa.Table.from_pylist(rows) if rows else pa.table({})


def write_shard(settings: Settings, round_idx: int, stage: str, table: str, shard_idx: int, n_shards: int,
                rows: list[dict] | pa.Table) -> str:
    """Replace one shard's rows (an empty shard writes an empty file, so the merge knows it ran)."""
    uri = shard_path(settings, round_idx, stage, table, shard_idx, n_shards)
    data = rows_table(rows)
    fs, path = fsspec.core.url_to_fs(uri, **settings.fsspec_options())
    fs.makedirs(os.path.dirname(path), exist_ok=True)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" in protocols:
        partial = f"{path}.{uuid.uuid4().hex}.partial"
        pq.write_table(data, partial, filesystem=fs)
        os.replace(partial, path)
    else:
        pq.write_table(data, path, filesystem=fs)
    return uri


def read_shards(settings: Settings, round_idx: int, stage: str, table: str, n_shards: int,
                columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """Each shard's rows (optionally some columns) in shard order; a shard that never ran is an error naming
    its file."""
    for data in read_shard_tables(settings, round_idx, stage, table, n_shards, columns):
        yield data.to_pandas()


def read_shard_tables(settings: Settings, round_idx: int, stage: str, table: str, n_shards: int,
                      columns: list[str] | None = None) -> Iterator[pa.Table]:
    """`read_shards` as Arrow tables (no pandas copy)."""
    for shard_idx in range(n_shards):
        uri = shard_path(settings, round_idx, stage, table, shard_idx, n_shards)
        fs, path = fsspec.core.url_to_fs(uri, **settings.fsspec_options())
        if not fs.exists(path):
            raise FileNotFoundError(f"shard {shard_idx} of {n_shards} of stage {stage!r} (round {round_idx}) wrote "
                                    f"no {table!r} rows: {uri} is missing; re-run the stage")
        data = pq.read_table(path, filesystem=fs)
        yield data.select(columns) if columns and data.num_columns else data


def remove_round_shards(settings: Settings, round_idx: int) -> None:
    """Drop a finished round's staging files (its rows live in LanceDB)."""
    fs, path = fsspec.core.url_to_fs(shard_root(settings, round_idx), **settings.fsspec_options())
    if fs.exists(path):
        fs.rm(path, recursive=True)
