"""Ingest stage: unlabeled images from the embedded world or any folder/fsspec URL into `images`.

Sources: "world://unlabeled?n=1000&seed=0" renders scenes of the unlabeled split (their
labels are never stored); anything else is a folder URL (local path, file://, s3://).
Bad files are recorded in `ingest_errors` with their path and reason; good ones are stored
as PNG at the backbone's input size under the sha256 of that PNG, so re-ingesting writes
the same rows. An image already stored keeps its row (and the path it was first stored from).

Every entry the source lists is accounted for (tasks/logic/file_accounting.py), in the metrics
and in `image_sources`, one row per path: the image it became ("original" or "duplicate", with
the original's path) or why it did not ("rejected", "skipped", with the reason):

    files_seen == ingested + duplicates (of stored content, or within this ingest) + rejected + skipped

Sharded by source path (tasks/sharded_stage.py runs `INGEST`): `ingest_rows` reads or renders the files of
one shard; `merge_ingested` keeps one row per distinct image over every shard (the first path in sorted order)
and upserts `images`, `ingest_errors` and `image_sources`.
"""

from __future__ import annotations

import hashlib
import time
from urllib.parse import parse_qs, urlparse

import pandas as pd
from tqdm.auto import tqdm

from storage.image_files import ImageRejected, encode_png, read_image, scan_source
from storage.settings import Settings
from storage.shard_files import rows_table
from storage.tables import connect, read, sql_quote, upsert
from tasks.logic.file_accounting import classify_files, ingest_counts
from tasks.logic.shards import shard_of
from tasks.sharded_stage import StagedRows, sharded_stage
from tasks.stage import timed
from tasks.stage_result import StageResult


def parse_world_source(source: str) -> tuple[str, int, int]:
    """("unlabeled", n, seed) from "world://unlabeled?n=1000&seed=0"."""
    url = urlparse(source)
    query = parse_qs(url.query)
    split = url.netloc
    if split != "unlabeled":
        raise ValueError(f"world source {source!r}: only the unlabeled split may be ingested for training")
    try:
        return split, int(query.get("n", ["1000"])[0]), int(query.get("seed", ["0"])[0])
    except ValueError as exc:
        raise ValueError(f"world source {source!r}: n and seed must be integers") from exc


def _world_records(source: str, shard_idx: int, n_shards: int):
    from world import splits
    from world.render import render

    split, n, seed = parse_world_source(source)
    for index in range(n):
        uri = splits.source_uri(split, index, seed)
        if shard_of(uri, n_shards) == shard_idx:
            image = render(splits.scene_at(split, index, seed))
            yield uri, image, image.shape[1], image.shape[0], None


def _file_records(paths: list[str], size: int, settings: Settings, max_pixels: int):
    for path in paths:
        try:
            image = read_image(path, size, settings.fsspec_options(), max_pixels=max_pixels)
            yield path, image, size, size, None
        except ImageRejected as exc:
            yield path, None, 0, 0, exc


def ingest_rows(settings: Settings, shard_idx: int, n_shards: int, source: str, image_size: int,
                max_pixels: int = 50_000_000) -> dict[str, list[dict]]:
    """The `images`, `ingest_errors` and `skipped` rows of one shard's paths."""
    skipped = []
    if source.startswith("world://"):
        records = _world_records(source, shard_idx, n_shards)
    else:
        listing = scan_source(source, settings.fsspec_options())
        mine = [path for path in listing.images if shard_of(path, n_shards) == shard_idx]
        records = _file_records(mine, image_size, settings, max_pixels)
        skipped = [{"path": path, "reason": reason} for path, reason in listing.skipped
                   if shard_of(path, n_shards) == shard_idx]
    good, bad = [], []
    for uri, image, width, height, error in tqdm(records, desc=f"ingest shard {shard_idx}/{n_shards}", unit="img"):
        if error is not None:
            bad.append({"error_id": hashlib.sha256(uri.encode()).hexdigest(), "source": source, "path": uri,
                        "reason": error.reason, "message": str(error)})
            continue
        png = encode_png(image)
        good.append({"image_id": hashlib.sha256(png).hexdigest()[:32], "source": source, "source_uri": uri,
                     "width": width, "height": height, "png": png})
    return {"images": good, "ingest_errors": bad, "skipped": skipped}


def merge_ingested(settings: Settings, staged: StagedRows, source: str, batch_size: int = 2000) -> StageResult:
    """Every shard's rows: identical images from two paths are one image (the first path in sorted order), and an
    image stored by an earlier ingest is not written again; every path is accounted for in `image_sources`."""
    db = connect(settings)
    image_of: dict[str, str] = {}  # source_uri -> image_id
    for frame in staged.frames("images", columns=["image_id", "source_uri"]):
        image_of.update(zip(frame.get("source_uri", []), frame.get("image_id", [])))
    outcomes = classify_files(image_of, _stored_originals(db, sorted(set(image_of.values())), batch_size))
    new = {(o.image_id, o.path) for o in outcomes if o.kind == "ingested"}
    versions: dict[str, int] = {}
    for frame in staged.frames("images"):
        if not len(frame):
            continue
        keep = [(i, u) in new for i, u in zip(frame["image_id"], frame["source_uri"])]
        frame = frame[keep].sort_values("source_uri")
        for start in range(0, len(frame), batch_size):
            versions["images"] = upsert(db, "images", frame.iloc[start:start + batch_size].reset_index(drop=True))
    bad = _staged(staged, "ingest_errors", ["error_id", "source", "path", "reason", "message"])
    skipped = _staged(staged, "skipped", ["path", "reason"])
    versions["ingest_errors"] = upsert(db, "ingest_errors", bad.reset_index(drop=True),
                                       replace_where=f"source = {sql_quote(source)}")
    sources = _source_rows(source, outcomes, bad, skipped)
    for start in range(0, max(len(sources), 1), batch_size):  # an empty source still creates the table
        versions["image_sources"] = upsert(db, "image_sources", sources[start:start + batch_size])
    files_seen = len(set(image_of) | set(bad["path"]) | set(skipped["path"]))
    counts = ingest_counts(files_seen, [o.kind for o in outcomes], len(bad), len(skipped))
    return StageResult("ingest", -1, versions, len({o.image_id for o in outcomes}), counts)


def _stored_originals(db, image_ids: list[str], batch_size: int) -> dict[str, str]:
    """image_id -> source_uri of those of `image_ids` already in `images` (stored by an earlier ingest)."""
    stored: dict[str, str] = {}
    for start in range(0, len(image_ids), batch_size):
        chunk = ", ".join(sql_quote(i) for i in image_ids[start:start + batch_size])
        frame = read(db, "images", where=f"image_id IN ({chunk})", columns=["image_id", "source_uri"])
        stored.update(zip(frame["image_id"], frame["source_uri"]))
    return stored


def _staged(staged: StagedRows, table: str, columns: list[str]) -> pd.DataFrame:
    """All shards' rows of a table, sorted by path (an empty frame with `columns` when there are none)."""
    frames = [f for f in staged.frames(table) if len(f)]
    return pd.concat(frames, ignore_index=True).sort_values("path") if frames else pd.DataFrame(columns=columns)


def _source_rows(source: str, outcomes, bad: pd.DataFrame, skipped: pd.DataFrame) -> list[dict]:
    """One `image_sources` row per path this ingest saw, sorted by path."""
    rows = [{"path": o.path, "source": source, "status": "original" if o.path == o.original else "duplicate",
             "reason": "", "image_id": o.image_id, "original_uri": o.original} for o in outcomes]
    for status, frame in (("rejected", bad), ("skipped", skipped)):
        rows += [{"path": path, "source": source, "status": status, "reason": reason, "image_id": "",
                  "original_uri": ""} for path, reason in zip(frame["path"], frame["reason"])]
    return sorted(rows, key=lambda row: row["path"])


def _source_key(source: str) -> str:
    """A short, path-safe name for a source URL (its staging folder)."""
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def ingest_source(source: str, image_size: int, max_pixels: int = 50_000_000, namespace: str = "") -> StageResult:
    """Ingest a source in this process, outside a flow (`asg ingest`): one shard, then the merge, no staging file."""
    settings = Settings.from_env().within(namespace)
    started = time.perf_counter()
    tables = ingest_rows(settings, 0, 1, source, image_size, max_pixels)
    memory = {table: rows_table(rows) for table, rows in tables.items()}
    result = merge_ingested(settings, StagedRows(settings, -1, ingest_folder(source), 1, memory), source)
    return timed(result, time.perf_counter() - started)


def ingest_folder(source: str) -> str:
    """The staging folder of a source's shards."""
    return f"ingest-{_source_key(source)}"


INGEST = sharded_stage("ingest", "ingest-images", ingest_rows, merge_ingested,
                       counted=("images", "ingest_errors", "skipped"),
                       staging=lambda args: (-1, ingest_folder(args["source"])))
