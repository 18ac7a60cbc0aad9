"""Where an interrupted fine-tune left off: one safetensors file per role under the object store, so a re-run of
the stage after a crash continues each role's update from its last saved step instead of from step 0.

    objects_uri/progress/round-3/finetune-<key>/solver.safetensors   (tensors, plus "step" and "losses")

The key is a hash of everything that decides the update (tasks/finetune.py), so progress saved for other inputs
is never picked up. A file is replaced whole (written under a temporary name and renamed locally; one PUT on
s3://), so a kill in the middle of a save leaves the previous one readable. The stage removes its folder once
its checkpoint is saved.

    save_progress(settings, 3, key, "solver", {"param.0": array, ...}, step=40, losses=[...])
    found = load_progress(settings, 3, key, "solver")   # (step, losses, arrays) or None
"""

from __future__ import annotations

import json
import os
import uuid

import fsspec
import numpy as np
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

from storage.settings import Settings


def progress_folder(settings: Settings, round_idx: int, key: str) -> str:
    return f"{settings.objects_uri.rstrip('/')}/progress/round-{round_idx}/finetune-{key[:24]}"


def save_progress(settings: Settings, round_idx: int, key: str, role: str, arrays: dict[str, np.ndarray],
                  step: int, losses: list[float]) -> str:
    """Replace `role`'s saved progress with `arrays` at `step` (and the losses of the steps so far)."""
    uri = f"{progress_folder(settings, round_idx, key)}/{role}.safetensors"
    data = save_arrays({**arrays, "losses": np.asarray(losses, dtype=np.float64)},
                       metadata={"step": str(step), "format": "asg-train-progress-1"})
    fs, path = fsspec.core.url_to_fs(uri, **settings.fsspec_options())
    fs.makedirs(os.path.dirname(path), exist_ok=True)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" in protocols:
        partial = f"{path}.{uuid.uuid4().hex}.partial"
        with open(partial, "wb") as handle:
            handle.write(data)
        os.replace(partial, path)
    else:
        fs.pipe_file(path, data)
    return uri


def load_progress(settings: Settings, round_idx: int, key: str,
                  role: str) -> tuple[int, list[float], dict[str, np.ndarray]] | None:
    """(step, losses, arrays) saved for `role` under `key`, or None when there is none."""
    uri = f"{progress_folder(settings, round_idx, key)}/{role}.safetensors"
    fs, path = fsspec.core.url_to_fs(uri, **settings.fsspec_options())
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        return None
    arrays = load_arrays(data)
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    step = int(header["__metadata__"]["step"])
    return step, arrays.pop("losses").tolist(), arrays


def remove_progress(settings: Settings, round_idx: int, key: str) -> None:
    """Drop a finished fine-tune's saved progress."""
    fs, path = fsspec.core.url_to_fs(progress_folder(settings, round_idx, key), **settings.fsspec_options())
    if fs.exists(path):
        fs.rm(path, recursive=True)
