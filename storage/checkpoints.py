"""Checkpoint folders in the object store (a local folder or s3://), by name.

A checkpoint is a folder of safetensors files plus config.json written by a backbone's
`save`. Remote checkpoints are mirrored into a local cache folder before loading.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path

import fsspec

from storage.settings import Settings


def checkpoint_uri(settings: Settings, name: str) -> str:
    return f"{settings.objects_uri.rstrip('/')}/checkpoints/{name}"


def _is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


# A remote checkpoint is `<uri>/<version>/...` plus `<uri>/LATEST` naming the version: object stores cannot
# rename a folder, so a new version is uploaded beside the old one and LATEST (one small PUT, atomic) is switched
# last. An interrupted upload leaves LATEST, and so the previous checkpoint, as it was.
LATEST = "LATEST"


class StorageFull(OSError):
    """A checkpoint could not be written for lack of space; the previous one is still current."""

    def __str__(self) -> str:
        return str(self.strerror)


def _is_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def _full(uri: str, where: Path | str, exc: OSError) -> StorageFull:
    return StorageFull(exc.errno, f"checkpoint {uri} not saved: {os.strerror(exc.errno).lower()} while writing "
                                  f"under {where}; the previous checkpoint there (if any) is still current")


def _owned_prefix(prefix: str) -> str:
    """A temporary folder's name prefix that says which process on which host made it."""
    return f"{prefix}{socket.gethostname()}-{os.getpid()}-"


def _abandoned(folder: Path, prefix: str) -> list[Path]:
    """The temporary folders under `folder` named `_owned_prefix(prefix)` by a process of this host that is gone
    (a save killed midway leaves its folder behind). Folders of live processes and of other hosts are not."""
    mine = f"{prefix}{socket.gethostname()}-"
    found = []
    for entry in sorted(folder.glob(f"{glob.escape(mine)}*")) if folder.is_dir() else ():
        pid = entry.name[len(mine):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            found.append(entry)
        except (PermissionError, OverflowError):
            pass
    return found


def sweep_abandoned(folder: Path, prefix: str) -> list[str]:
    """Remove `_abandoned(folder, prefix)`; returns their names."""
    removed = _abandoned(folder, prefix)
    for entry in removed:
        shutil.rmtree(entry, ignore_errors=True)
    return [entry.name for entry in removed]


def _restore_interrupted_swap(target: Path) -> None:
    """A swap killed between its two renames leaves the previous checkpoint in its retired folder and none under
    the target's name: put it back before anything else is published there."""
    if target.exists():
        return
    for retired in _abandoned(target.parent, f".{target.name}-old-"):
        if (retired / target.name / "config.json").is_file():
            os.replace(retired / target.name, target)
            return


def _publish_local(local_dir: Path, uri: str, target: Path) -> None:
    # Copy next to the target, then swap it in: a crash never leaves a half-written checkpoint under the
    # target's name, and a failed copy (a full disk) leaves the old one current and no staging behind.
    target.parent.mkdir(parents=True, exist_ok=True)
    _restore_interrupted_swap(target)
    sweep_abandoned(target.parent, f".{target.name}-")
    sweep_abandoned(target.parent, f".{target.name}-old-")
    staging = Path(tempfile.mkdtemp(prefix=_owned_prefix(f".{target.name}-"), dir=target.parent))
    try:
        shutil.copytree(local_dir, staging, dirs_exist_ok=True)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise _full(uri, target.parent, exc) if _is_full(exc) else exc
    if target.exists():
        retired = Path(tempfile.mkdtemp(prefix=_owned_prefix(f".{target.name}-old-"), dir=target.parent))
        os.replace(target, retired / target.name)
        os.replace(staging, target)
        shutil.rmtree(retired)
    else:
        os.replace(staging, target)


def _remote_root(uri: str, settings: Settings):
    fs, path = fsspec.core.url_to_fs(uri, **settings.fsspec_options())
    return fs, path.rstrip("/")


def _current_version(fs, root: str) -> str | None:
    """The folder under `root` that holds the current checkpoint ("" for the flat layout of older versions)."""
    try:
        name = fs.cat_file(f"{root}/{LATEST}").decode().strip()
    except FileNotFoundError:
        return "" if fs.exists(f"{root}/config.json") else None
    return name or None


def publish_checkpoint(local_dir: Path, uri: str, settings: Settings) -> str:
    """Copy a saved checkpoint folder to `uri` (no-op when it is already there); the previous checkpoint at `uri`
    stays current until the new one is complete."""
    if not _is_remote(uri):
        target = Path(uri.removeprefix("file://"))
        if target.resolve() != Path(local_dir).resolve():
            _publish_local(Path(local_dir), uri, target)
        return uri
    fs, root = _remote_root(uri, settings)
    previous = _current_version(fs, root)
    version = f"v-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    fs.put(str(local_dir).rstrip("/") + "/", f"{root}/{version}/", recursive=True)
    fs.pipe_file(f"{root}/{LATEST}", version.encode())
    if previous:  # the superseded version; a flat older layout is left for `local_checkpoint` to ignore
        with contextlib.suppress(FileNotFoundError):
            fs.rm(f"{root}/{previous}", recursive=True)
    return uri


def remote_checkpoint_folder(uri: str, settings: Settings) -> str:
    """The store path of the files of the current checkpoint at a remote `uri`."""
    fs, root = _remote_root(uri, settings)
    version = _current_version(fs, root)
    if version is None:
        raise FileNotFoundError(f"checkpoint not found: {uri} (no config.json)")
    return f"{root}/{version}" if version else root


def local_checkpoint(uri: str, settings: Settings) -> Path:
    """A local folder holding the checkpoint at `uri` (downloaded when remote)."""
    if not _is_remote(uri):
        path = Path(uri.removeprefix("file://"))
        _restore_interrupted_swap(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"checkpoint not found: {uri} (no config.json)")
        return path
    fs, root = _remote_root(uri, settings)
    version = _current_version(fs, root)
    folder = f"{root}/{version}" if version else root
    if version is None or not fs.exists(f"{folder}/config.json"):
        raise FileNotFoundError(f"checkpoint not found: {uri} (no config.json)")
    cache = settings.home / "checkpoint_cache" / folder.strip("/").replace("/", "__")
    if version and (cache / "config.json").is_file():
        return cache  # a published version never changes: its cached copy is complete
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=cache.parent))
    fs.get(folder + "/", str(staging) + "/", recursive=True)
    shutil.rmtree(cache, ignore_errors=True)
    os.replace(staging, cache)
    return cache


def save_checkpoint(backbone, uri: str, settings: Settings) -> str:
    """Save a backbone into a temporary folder under $ASG_HOME and publish it to `uri`. A full disk (or a file-size
    limit) fails with StorageFull, one line, and leaves the previous checkpoint at `uri` current."""
    settings.home.mkdir(parents=True, exist_ok=True)
    sweep_abandoned(settings.home, "ckpt-")  # what saves killed midway (kill -9, OOM) left behind
    with tempfile.TemporaryDirectory(prefix=_owned_prefix("ckpt-"), dir=settings.home) as local:
        try:
            backbone.save(Path(local))
        except OSError as exc:
            raise _full(uri, settings.home, exc) if _is_full(exc) else exc
        except Exception as exc:  # safetensors' Rust writer reports the OS error in its message
            found = re.search(r"\(os error (\d+)\)", str(exc))
            os_error = OSError(int(found.group(1)), str(exc)) if found else None
            if os_error is not None and _is_full(os_error):
                raise _full(uri, settings.home, os_error) from exc
            raise
        return publish_checkpoint(Path(local), uri, settings)


def write_card(uri: str, card: dict, settings: Settings) -> None:
    """Write card.json (how the checkpoint was made and what it scored) into the checkpoint folder."""
    import json

    if _is_remote(uri):
        fs, path = fsspec.core.url_to_fs(uri, **settings.fsspec_options())
        path = remote_checkpoint_folder(uri, settings)
    else:
        fs, path = fsspec.core.url_to_fs(uri)
    with fs.open(f"{path.rstrip('/')}/card.json", "w") as f:
        json.dump(card, f, indent=1, sort_keys=True)
