"""Checkpoint folders in the object store (a local folder or s3://), by name.

A checkpoint is a folder of safetensors files plus config.json written by a backbone's
`save`. Remote checkpoints are mirrored into a local cache folder before loading.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import fsspec

from storage.settings import Settings


def checkpoint_uri(settings: Settings, name: str) -> str:
    return f"{settings.objects_uri.rstrip('/')}/checkpoints/{name}"


def _is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def publish_checkpoint(local_dir: Path, uri: str, settings: Settings) -> str:
    """Copy a saved checkpoint folder to `uri` (no-op when it is already there)."""
    if not _is_remote(uri):
        target = Path(uri.removeprefix("file://"))
        if target.resolve() != Path(local_dir).resolve():
            # Copy next to the target, then swap it in: a crash never leaves a half-written checkpoint
            # under the target's name.
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
            shutil.copytree(local_dir, staging, dirs_exist_ok=True)
            if target.exists():
                retired = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
                os.replace(target, retired / target.name)
                os.replace(staging, target)
                shutil.rmtree(retired)
            else:
                os.replace(staging, target)
        return uri
    fs, path = fsspec.core.url_to_fs(uri, **settings.fsspec_options())
    fs.put(str(local_dir).rstrip("/") + "/", path.rstrip("/") + "/", recursive=True)
    return uri


def local_checkpoint(uri: str, settings: Settings) -> Path:
    """A local folder holding the checkpoint at `uri` (downloaded when remote)."""
    if not _is_remote(uri):
        path = Path(uri.removeprefix("file://"))
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"checkpoint not found: {uri} (no config.json)")
        return path
    fs, path = fsspec.core.url_to_fs(uri, **settings.fsspec_options())
    if not fs.exists(f"{path.rstrip('/')}/config.json"):
        raise FileNotFoundError(f"checkpoint not found: {uri} (no config.json)")
    cache = settings.home / "checkpoint_cache" / path.strip("/").replace("/", "__")
    cache.mkdir(parents=True, exist_ok=True)
    fs.get(path.rstrip("/") + "/", str(cache) + "/", recursive=True)
    return cache


def save_checkpoint(backbone, uri: str, settings: Settings) -> str:
    """Save a backbone into a temporary folder under $ASG_HOME and publish it to `uri`."""
    settings.home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ckpt-", dir=settings.home) as local:
        backbone.save(Path(local))
        return publish_checkpoint(Path(local), uri, settings)


def write_card(uri: str, card: dict, settings: Settings) -> None:
    """Write card.json (how the checkpoint was made and what it scored) into the checkpoint folder."""
    import json

    fs, path = fsspec.core.url_to_fs(uri, **settings.fsspec_options())
    with fs.open(f"{path.rstrip('/')}/card.json", "w") as f:
        json.dump(card, f, indent=1, sort_keys=True)
