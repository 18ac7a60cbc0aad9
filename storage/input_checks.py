"""Checks that the files a command names are there and readable, before any compute starts.

    name = check_checkpoint("models/checkpoints/shapes-base", settings)   # -> "shapes"
    check_vqa_file("bench/vqa.jsonl", settings)

Each raises FileNotFoundError or ValueError with one line naming the file (and line) at fault, so
a bad input is reported in a second instead of from inside a flow run. Safetensors files are
checked from their header (its JSON and the byte ranges it claims), without loading tensors.
"""

from __future__ import annotations

import json
import struct

import fsspec

from storage.benchmark_files import read_jsonl, read_vqa_file
from storage.image_files import SourceNotFound
from storage.checkpoints import remote_checkpoint_folder
from storage.settings import Settings, refuse_credentials

_MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own limit


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def check_checkpoint(uri: str, settings: Settings) -> str:
    """The backbone name in `uri`'s config.json, after checking the folder's config and safetensors headers
    (headers of local checkpoints only: a remote one is not downloaded here)."""
    fs, root = fsspec.core.url_to_fs(uri, **(settings.fsspec_options() if not _is_local(uri) else {}))
    if not _is_local(uri):
        try:
            root = remote_checkpoint_folder(uri, settings)  # the version its LATEST names
        except FileNotFoundError:
            pass
    config_file = f"{root.rstrip('/')}/config.json"
    if not fs.isfile(config_file):
        raise FileNotFoundError(f"checkpoint not found: {uri} (no config.json)")
    try:
        with fs.open(config_file, "rb") as f:
            config = json.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"checkpoint {uri} is unreadable: config.json is not JSON ({exc})") from exc
    if not isinstance(config, dict) or not isinstance(config.get("backbone"), str):
        raise ValueError(f"checkpoint {uri} is unreadable: config.json names no backbone")
    if _is_local(uri):
        for path in sorted(fs.glob(f"{root.rstrip('/')}/*.safetensors")):
            problem = _safetensors_problem(fs, path)
            if problem:
                raise ValueError(f"checkpoint {uri} is unreadable: {path.rsplit('/', 1)[-1]} {problem}")
    return config["backbone"]


def _safetensors_problem(fs, path: str) -> str | None:
    """None for a well-formed safetensors file, else what is wrong with it."""
    size = fs.size(path)
    with fs.open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            return "is truncated (no header)"
        (header_bytes,) = struct.unpack("<Q", prefix)
        if header_bytes > min(_MAX_HEADER_BYTES, size - 8):
            return "has a corrupt header (its length is past the end of the file)"
        try:
            header = json.loads(f.read(header_bytes).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "has a corrupt header (not JSON)"
    if not isinstance(header, dict):
        return "has a corrupt header (not a JSON object)"
    try:
        end = max([int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"], default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        return "has a corrupt header (bad tensor entries)"
    if end != size - 8 - header_bytes:
        return f"is truncated or padded ({size - 8 - header_bytes} data bytes, header says {end})"
    return None


def check_vqa_file(uri: str, settings: Settings) -> int:
    """The number of items of a VQA JSON Lines file, after checking every line and every local image."""
    items = read_vqa_file(uri, settings.fsspec_options())
    for number, item in enumerate(items, start=1):
        image = item["image"]
        if _is_local(image):
            fs, path = fsspec.core.url_to_fs(image)
            if not fs.isfile(path):
                raise FileNotFoundError(f"{uri}, item {number}: image not found: {image}")
    if not items:
        raise ValueError(f"{uri}: no items")
    return len(items)


def check_jsonl_file(uri: str, settings: Settings) -> int:
    """The number of objects of a JSON Lines file (e.g. GenEval metadata), after checking every line."""
    rows = read_jsonl(uri, settings.fsspec_options())
    if not rows:
        raise ValueError(f"{uri}: no lines")
    return len(rows)


def check_image_folder(uri: str, settings: Settings) -> None:
    """Raise SourceNotFound unless the folder (or file) of images exists; a URL with credentials is refused (they
    would be stored with the round's parameters)."""
    refuse_credentials(uri)
    fs, root = fsspec.core.url_to_fs(uri, **(settings.fsspec_options() if not _is_local(uri) else {}))
    if not fs.exists(root):
        raise SourceNotFound(uri)
