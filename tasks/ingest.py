"""Ingest stage: unlabeled images from the embedded world or any folder/fsspec URL into `images`.

Sources: "world://unlabeled?n=1000&seed=0" renders scenes of the unlabeled split (their
labels are never stored); anything else is a folder URL (local path, file://, s3://).
Bad files are recorded in `ingest_errors` with their path and reason; good ones are stored
as PNG at the backbone's input size under the sha256 of that PNG, so re-ingesting writes
the same rows.

Sharded by source path: `ingest_shard` reads or renders the files of one shard and stages its rows;
`ingest_images` merges them (one row per distinct image, the first path in sorted order) and
upserts `images` and `ingest_errors`.
"""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qs, urlparse

import pandas as pd
from tqdm.auto import tqdm

from storage.image_files import ImageRejected, encode_png, list_image_files, read_image
from storage.settings import Settings
from storage.shard_files import read_shards, write_shard
from storage.tables import connect, sql_quote, upsert
from tasks.logic.shards import shard_of
from tasks.round_inputs import shard_result
from tasks.stage import stage_task
from tasks.stage_result import ShardResult, StageResult


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


def _file_records(source: str, size: int, settings: Settings, max_pixels: int, shard_idx: int, n_shards: int):
    for path in list_image_files(source, settings.fsspec_options()):
        if shard_of(path, n_shards) != shard_idx:
            continue
        try:
            image = read_image(path, size, settings.fsspec_options(), max_pixels=max_pixels)
            yield path, image, size, size, None
        except ImageRejected as exc:
            yield path, None, 0, 0, exc


@stage_task("ingest-shard", "ingest-images-shard")
def ingest_shard(source: str, image_size: int, shard_idx: int = 0, n_shards: int = 1,
                 max_pixels: int = 50_000_000) -> ShardResult:
    settings = Settings.from_env()
    records = _world_records(source, shard_idx, n_shards) if source.startswith("world://") else _file_records(
        source, image_size, settings, max_pixels, shard_idx, n_shards)
    good, bad = [], []
    for uri, image, width, height, error in tqdm(records, desc=f"ingest shard {shard_idx}/{n_shards}", unit="img"):
        if error is not None:
            bad.append({"error_id": hashlib.sha256(uri.encode()).hexdigest(), "source": source, "path": uri,
                        "reason": error.reason, "message": str(error)})
            continue
        png = encode_png(image)
        good.append({"image_id": hashlib.sha256(png).hexdigest()[:32], "source": source, "source_uri": uri,
                     "width": width, "height": height, "png": png})
    write_shard(settings, -1, f"ingest-{_source_key(source)}", "images", shard_idx, n_shards, good)
    write_shard(settings, -1, f"ingest-{_source_key(source)}", "ingest_errors", shard_idx, n_shards, bad)
    return shard_result("ingest", -1, shard_idx, n_shards, len(good) + len(bad))


@stage_task("ingest", "ingest-images")
def ingest_images(source: str, n_shards: int = 1, shards: list[ShardResult] | None = None,
                  batch_size: int = 2000) -> StageResult:
    """Merge the shards: identical images from two paths are one image (the first path in sorted order)."""
    settings = Settings.from_env()
    db = connect(settings)
    stage = f"ingest-{_source_key(source)}"
    first: dict[str, tuple[str, int]] = {}  # image_id -> (first source_uri, shard)
    for shard_idx, frame in enumerate(read_shards(settings, -1, stage, "images", n_shards,
                                                  columns=["image_id", "source_uri"])):
        for image_id, uri in zip(frame.get("image_id", []), frame.get("source_uri", [])):
            if image_id not in first or uri < first[image_id][0]:
                first[image_id] = (uri, shard_idx)
    versions: dict[str, int] = {}
    for shard_idx, frame in enumerate(read_shards(settings, -1, stage, "images", n_shards)):
        if not len(frame):
            continue
        keep = [first[i] == (u, shard_idx) for i, u in zip(frame["image_id"], frame["source_uri"])]
        frame = frame[keep].sort_values("source_uri")
        for start in range(0, len(frame), batch_size):
            versions["images"] = upsert(db, "images", frame.iloc[start:start + batch_size].reset_index(drop=True))
    errors = [f for f in read_shards(settings, -1, stage, "ingest_errors", n_shards) if len(f)]
    bad = pd.concat(errors, ignore_index=True).sort_values("path") if errors else pd.DataFrame(
        columns=["error_id", "source", "path", "reason", "message"])
    versions["ingest_errors"] = upsert(db, "ingest_errors", bad.reset_index(drop=True),
                                       replace_where=f"source = {sql_quote(source)}")
    return StageResult("ingest", -1, versions, len(first), {"images_ingested": len(first), "images_rejected": len(bad)})


def _source_key(source: str) -> str:
    """A short, path-safe name for a source URL (its staging folder)."""
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def ingest_source(source: str, image_size: int, max_pixels: int = 50_000_000) -> StageResult:
    """Ingest a source in this process, outside a flow (`asg ingest`): one shard, then the merge."""
    ingest_shard.fn(source, image_size, 0, 1, max_pixels)
    return ingest_images.fn(source, 1)
