"""Shared inputs of the stage tasks: the round's backbone and the round's images, by reference."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import numpy as np

from models.registry import load_backbone
from storage.checkpoints import local_checkpoint
from storage.image_files import decode_png
from storage.settings import Settings
from storage.tables import read, sql_quote
from tasks.logic.selection import round_sample
from tasks.stage_result import ShardResult


def _load(path: str, device: str | None, dtype: str | None):
    if os.environ.get("ASG_TORCH_THREADS"):  # e.g. set for Dask workers (flows/task_runners.py)
        import torch

        torch.set_num_threads(int(os.environ["ASG_TORCH_THREADS"]))
    backbone = load_backbone(path)
    backbone.attach_roles()
    return placed(backbone, device, dtype)


class BackboneCache:
    """The backbones this process holds: the `size` most recently used checkpoint versions, each loaded once
    (one object that can say what it holds and how often it loaded, where an lru_cache and a set of seen keys
    could disagree)."""

    def __init__(self, size: int = 2):
        self.size = size
        self.loads = 0
        self._held: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()

    def holds(self, key: tuple) -> bool:
        with self._lock:
            return key in self._held

    def get(self, key: tuple):
        with self._lock:
            if key in self._held:
                self._held.move_to_end(key)
                return self._held[key]
            path, _, device, dtype = key  # (path, config.json mtime, device, dtype)
            backbone = _load(path, device, dtype)
            self.loads += 1
            self._held[key] = backbone
            while len(self._held) > self.size:
                self._held.popitem(last=False)
            return backbone


PROCESS_BACKBONES = BackboneCache()


def backbone_loads() -> int:
    """How many backbones this process has loaded (a worker should load each checkpoint once)."""
    return PROCESS_BACKBONES.loads


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
    return PROCESS_BACKBONES.get(_cache_key(checkpoint_uri, settings))


def private_backbone(checkpoint_uri: str, settings: Settings):
    """A trainable copy of a checkpoint's backbone that leaves the input checkpoint's cached one untouched: a deep
    copy when this process already holds it (no second load from disk), else a fresh load."""
    import copy

    key = _cache_key(checkpoint_uri, settings)
    if PROCESS_BACKBONES.holds(key):
        return copy.deepcopy(PROCESS_BACKBONES.get(key))
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
