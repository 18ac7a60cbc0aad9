"""Shared inputs of the stage tasks: the round's backbone and the round's images, by reference."""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

from models.registry import load_backbone
from storage.checkpoints import local_checkpoint
from storage.image_files import decode_png
from storage.settings import Settings
from storage.tables import read, sql_quote
from tasks.logic.selection import round_sample
from tasks.stage_result import ShardResult


_SEEN: set[tuple] = set()  # keys this process has loaded (lru_cache cannot say whether it holds one)


def backbone_loads() -> int:
    """How many backbones this process has loaded (a worker should load each checkpoint once)."""
    return _cached_backbone.cache_info().misses


def _load(path: str, device: str | None, dtype: str | None):
    backbone = load_backbone(path)
    backbone.attach_roles()
    return placed(backbone, device, dtype)


@lru_cache(maxsize=2)
def _cached_backbone(path: str, stamp: float, device: str | None, dtype: str | None):
    _SEEN.add((path, stamp, device, dtype))
    if os.environ.get("ASG_TORCH_THREADS"):  # e.g. set for Dask workers (flows/task_runners.py)
        import torch

        torch.set_num_threads(int(os.environ["ASG_TORCH_THREADS"]))
    return _load(path, device, dtype)


def _cache_key(checkpoint_uri: str, settings: Settings) -> tuple:
    path = local_checkpoint(checkpoint_uri, settings)
    return str(path), (path / "config.json").stat().st_mtime, settings.device, settings.dtype


def placed(backbone, device: str | None, dtype: str | None):
    """Move a backbone that supports it (`to`) onto ASG_DEVICE / ASG_DTYPE."""
    if device or dtype:
        if not hasattr(backbone, "to"):
            raise ValueError(f"backbone {backbone.name!r} runs on the CPU only; unset ASG_DEVICE/ASG_DTYPE")
        import torch

        backbone.to(device or "cpu", getattr(torch, dtype) if dtype else None)
    return backbone


def backbone_for(checkpoint_uri: str, settings: Settings):
    """The backbone of a checkpoint, loaded once per process and checkpoint version."""
    return _cached_backbone(*_cache_key(checkpoint_uri, settings))


def private_backbone(checkpoint_uri: str, settings: Settings):
    """A trainable copy of a checkpoint's backbone that leaves the input checkpoint's cached one untouched: a deep
    copy when this process already holds it (no second load from disk), else a fresh load."""
    import copy

    key = _cache_key(checkpoint_uri, settings)
    if key in _SEEN:
        return copy.deepcopy(_cached_backbone(*key))
    path, _, device, dtype = key
    return _load(path, device, dtype)


def round_image_ids(db, source: str, n_images: int, round_idx: int, seed: int) -> list[str]:
    """The round's images: a deterministic, round-dependent sample of those ingested from `source` (every image its
    files became, including those first stored from another source)."""
    frame = read(db, "image_sources", where=f"source = {sql_quote(source)} AND image_id != ''", columns=["image_id"])
    if frame.empty:
        raise ValueError(f"no images ingested from {source!r}; run the ingest stage first")
    return round_sample(sorted(set(frame["image_id"])), n_images, round_idx, seed)


def shard_result(stage: str, round_idx: int, shard_idx: int, n_shards: int, rows: int) -> ShardResult:
    return ShardResult(stage, round_idx, shard_idx, n_shards, rows, backbone_loads=backbone_loads())


def images_by_id(db, table: str, key: str, ids: list[str], version: int | str | None = None) -> list[np.ndarray]:
    if not ids:
        return []
    found = {}
    for start in range(0, len(ids), 2000):
        chunk = ids[start:start + 2000]
        where = f"{key} IN ({', '.join(sql_quote(i) for i in chunk)})"
        frame = read(db, table, where=where, columns=[key, "png"], version=version)
        found.update(zip(frame[key], frame["png"]))
    missing = [i for i in ids if i not in found]
    if missing:
        raise KeyError(f"{len(missing)} ids missing from table {table!r}, e.g. {missing[:3]}")
    return [decode_png(found[i]) for i in ids]
