"""External benchmark files: VQA JSON Lines in, GenEval metadata in, GenEval sample folders out.

VQA file: one object per line with "image" (relative to the file's folder unless absolute or a URL),
"question", "answer" and optionally "family". GenEval layout written: <out>/<index:05d>/metadata.jsonl
and <out>/<index:05d>/samples/<sample:04d>.png, as GenEval's evaluator expects.
"""

from __future__ import annotations

import json
import posixpath

import fsspec
import numpy as np

from storage.image_files import encode_png


def read_jsonl(uri: str, storage_options: dict | None = None) -> list[dict]:
    """Every line of a JSON Lines file; a bad line raises ValueError naming the file and line number."""
    try:
        with fsspec.open(uri, "r", **(storage_options or {})) as f:
            lines = f.read().splitlines()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"benchmark file not found: {uri}") from exc
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{uri}, line {number}: not JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise ValueError(f"{uri}, line {number}: expected a JSON object")
        rows.append(row)
    return rows


def read_vqa_file(uri: str, storage_options: dict | None = None) -> list[dict]:
    """VQA items with absolute image locations."""
    folder = posixpath.dirname(uri)
    items = []
    for number, row in enumerate(read_jsonl(uri, storage_options), start=1):
        missing = [k for k in ("image", "question", "answer") if not row.get(k)]
        if missing:
            raise ValueError(f"{uri}, item {number}: missing {', '.join(missing)}")
        image = row["image"]
        if not (image.startswith("/") or "://" in image):
            image = posixpath.join(folder, image)
        items.append({**row, "image": image})
    return items


def write_geneval_sample(out_dir: str, index: int, metadata: dict, images: list[np.ndarray],
                         storage_options: dict | None = None) -> str:
    fs, root = fsspec.core.url_to_fs(out_dir, **(storage_options or {}))
    folder = f"{root.rstrip('/')}/{index:05d}"
    fs.makedirs(f"{folder}/samples", exist_ok=True)
    with fs.open(f"{folder}/metadata.jsonl", "w") as f:
        f.write(json.dumps(metadata) + "\n")
    for j, image in enumerate(images):
        with fs.open(f"{folder}/samples/{j:04d}.png", "wb") as f:
            f.write(encode_png(image))
    return folder
