"""The identity of a store: a random id written once into its object store (`$ASG_OBJECTS_URI/store-id`).

A store deleted and made again gets a new id, so nothing cached against the old one (tasks/stage_cache.py)
is taken for the new one's contents.
"""

from __future__ import annotations

import uuid

import fsspec

from storage.settings import Settings


def store_id(settings: Settings) -> str:
    uri = f"{settings.objects_uri.rstrip('/')}/store-id"
    options = settings.fsspec_options() if "://" in uri and not uri.startswith("file://") else {}
    fs, path = fsspec.core.url_to_fs(uri, **options)
    try:
        return fs.cat_file(path).decode().strip()
    except FileNotFoundError:
        pass
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    try:
        with fs.open(path, "xb") as f:  # exclusive: two first users of a store agree on one id
            f.write(uuid.uuid4().hex.encode())
    except FileExistsError:
        pass
    return fs.cat_file(path).decode().strip()
