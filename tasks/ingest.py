"""Ingest stage: unlabeled images from the embedded world or any folder/fsspec URL into `images`.

Sources: "world://unlabeled?n=1000&seed=0" renders scenes of the unlabeled split (their
labels are never stored); anything else is a folder URL (local path, file://, s3://).
Bad files are recorded in `ingest_errors` with their path and reason; good ones are stored
as PNG at the backbone's input size under the sha256 of that PNG, so re-ingesting writes
the same rows.
"""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qs, urlparse

from tqdm.auto import tqdm

from storage.image_files import ImageRejected, encode_png, list_image_files, read_image
from storage.settings import Settings
from storage.tables import connect, sql_quote, upsert
from tasks.stage import stage_task
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


def _world_records(source: str):
    from world import splits
    from world.render import render

    split, n, seed = parse_world_source(source)
    for index in range(n):
        image = render(splits.scene_at(split, index, seed))
        yield splits.source_uri(split, index, seed), image, image.shape[1], image.shape[0], None


def _file_records(source: str, size: int, settings: Settings, max_pixels: int):
    for path in list_image_files(source, settings.fsspec_options()):
        try:
            image = read_image(path, size, settings.fsspec_options(), max_pixels=max_pixels)
            yield path, image, size, size, None
        except ImageRejected as exc:
            yield path, None, 0, 0, exc


@stage_task("ingest", "ingest-images")
def ingest_images(source: str, image_size: int, max_pixels: int = 50_000_000, batch_size: int = 2000) -> StageResult:
    settings = Settings.from_env()
    db = connect(settings)
    records = _world_records(source) if source.startswith("world://") else _file_records(
        source, image_size, settings, max_pixels)
    good, bad, versions = [], [], {}
    n_good = n_bad = 0
    for uri, image, width, height, error in tqdm(records, desc="ingest", unit="img"):
        if error is not None:
            bad.append({"error_id": hashlib.sha256(uri.encode()).hexdigest(), "source": source, "path": uri,
                        "reason": error.reason, "message": str(error)})
            continue
        png = encode_png(image)
        good.append({"image_id": hashlib.sha256(png).hexdigest()[:32], "source": source, "source_uri": uri,
                     "width": width, "height": height, "png": png})
        if len(good) >= batch_size:
            n_good += len(_dedupe(good))
            versions["images"] = upsert(db, "images", _dedupe(good))
            good = []
    if good:
        n_good += len(_dedupe(good))
        versions["images"] = upsert(db, "images", _dedupe(good))
    n_bad = len(bad)
    versions["ingest_errors"] = upsert(db, "ingest_errors", bad, replace_where=f"source = {sql_quote(source)}")
    return StageResult("ingest", -1, versions, n_good, {"images_ingested": n_good, "images_rejected": n_bad})


def _dedupe(rows: list[dict]) -> list[dict]:
    """Identical images from two paths are one image; the first path (sorted order) is kept."""
    seen, out = set(), []
    for row in rows:
        if row["image_id"] not in seen:
            seen.add(row["image_id"])
            out.append(row)
    return out
