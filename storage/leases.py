"""Leases in the object store: one holder at a time for a named piece of work (a round of one store).

A lease is a small JSON file `$ASG_OBJECTS_URI/leases/<name>.<generation>` written with an exclusive create
(local files: O_EXCL; S3: a conditional PUT, If-None-Match), so of two processes taking the same generation
exactly one wins. The newest generation is the current lease. Its holder refreshes `expires_at` every third of
the time to live from a background thread; a holder that died (kill -9, OOM, power loss) stops refreshing, and
its lease no longer counts once it has expired, or at once when the holder ran on this host and its process
is gone. Taking over a dead lease is creating the next generation, again exclusively.

    with round_lease(settings, "round-3"):
        ...  # a second `asg round --round-idx 3` on this store fails fast with LeaseHeld
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Iterator

import fsspec

from storage.settings import Settings

DEFAULT_TTL_S = 120.0


class LeaseHeld(RuntimeError):
    """Another live process holds the lease."""


@dataclass(frozen=True)
class Lease:
    name: str
    generation: int
    holder: str
    path: str


def _store(settings: Settings):
    uri = f"{settings.objects_uri.rstrip('/')}/leases"
    options = settings.fsspec_options() if "://" in uri and not uri.startswith("file://") else {}
    fs, root = fsspec.core.url_to_fs(uri, **options)
    fs.makedirs(root, exist_ok=True)
    return fs, root


def _generations(fs, root: str, name: str) -> list[int]:
    out = []
    for path in fs.ls(root, detail=False, refresh=True) if fs.exists(root) else []:
        base = path.rstrip("/").rsplit("/", 1)[-1]
        stem, _, generation = base.rpartition(".")
        if stem == name and generation.isdigit():
            out.append(int(generation))
    return sorted(out)


def _read(fs, path: str) -> dict | None:
    try:
        return json.loads(fs.cat_file(path).decode())
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return None  # released meanwhile, or half-written by a holder that died: not a live lease


def _alive(record: dict, now: float) -> bool:
    if record.get("expires_at", 0.0) <= now:
        return False
    if record.get("host") == socket.gethostname():
        try:
            os.kill(int(record.get("pid", -1)), 0)
        except ProcessLookupError:
            return False  # the holder's process on this host is gone
        except (PermissionError, ValueError, OverflowError):
            pass
    return True


def _describe(name: str, record: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record.get("started_at", 0.0)))
    until = time.strftime("%H:%M:%S UTC", time.gmtime(record.get("expires_at", 0.0)))
    return (f"{name} is being run by {record.get('holder', '?')} (pid {record.get('pid', '?')} on "
            f"{record.get('host', '?')}, since {since}); wait for it to finish, or if it died its lease lapses "
            f"at {until} unless it is renewed")


def take_lease(settings: Settings, name: str, ttl_s: float = DEFAULT_TTL_S) -> Lease:
    """Take `name`'s lease or raise LeaseHeld naming its live holder."""
    fs, root = _store(settings)
    generations = _generations(fs, root, name)
    now = time.time()
    if generations:
        record = _read(fs, f"{root}/{name}.{generations[-1]:06d}")
        if record is not None and _alive(record, now):
            raise LeaseHeld(_describe(name, record))
    generation = generations[-1] + 1 if generations else 1
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    record = {"name": name, "holder": holder, "host": socket.gethostname(), "pid": os.getpid(), "started_at": now,
              "expires_at": now + ttl_s, "ttl_s": ttl_s}
    path = f"{root}/{name}.{generation:06d}"
    try:
        _create_exclusive(fs, path, json.dumps(record).encode())
    except FileExistsError:
        winner = _read(fs, path) or {"holder": "another process"}
        raise LeaseHeld(_describe(name, winner)) from None
    for old in generations:  # superseded generations: the dead holders' files
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(f"{root}/{name}.{old:06d}")
    return Lease(name, generation, holder, path)


def _is_local(fs) -> bool:
    return "file" in fs.protocol or "local" in fs.protocol


def _private_copy(path: str, payload: bytes) -> str:
    """`payload` written whole to a temporary file beside `path` that no reader lists as a lease; its path."""
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as f:
        f.write(payload)
    return tmp


def _create_exclusive(fs, path: str, payload: bytes) -> None:
    """Create `path` holding `payload` or raise FileExistsError; readers never see it empty or half-written.

    Local files: the payload goes to a private temporary file that is then hard-linked to `path` (link fails
    when `path` exists, atomically). Object stores: one conditional PUT carries the whole payload.
    """
    if _is_local(fs):
        tmp = _private_copy(path, payload)
        try:
            os.link(tmp, path)
        finally:
            os.unlink(tmp)
        return
    with fs.open(path, "xb") as f:
        f.write(payload)


def renew_lease(settings: Settings, lease: Lease, ttl_s: float = DEFAULT_TTL_S) -> None:
    fs, _ = _store(settings)
    record = _read(fs, lease.path)
    if record is None or record.get("holder") != lease.holder:
        return  # released, or taken over after this holder looked dead: nothing of ours to renew
    record["expires_at"] = time.time() + ttl_s
    payload = json.dumps(record).encode()
    if _is_local(fs):  # replace in one step: a reader never sees it empty
        os.replace(_private_copy(lease.path, payload), lease.path)
        return
    with fs.open(lease.path, "wb") as f:
        f.write(payload)


def release_lease(settings: Settings, lease: Lease) -> None:
    fs, _ = _store(settings)
    record = _read(fs, lease.path)
    if record is not None and record.get("holder") == lease.holder:
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(lease.path)


@contextlib.contextmanager
def round_lease(settings: Settings, name: str, ttl_s: float = DEFAULT_TTL_S) -> Iterator[Lease]:
    """Hold `name`'s lease for the block, renewed every ttl/3 seconds by a daemon thread."""
    lease = take_lease(settings, name, ttl_s)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl_s / 3):
            with contextlib.suppress(Exception):  # a missed renewal is retried; the lease lasts ttl_s
                renew_lease(settings, lease, ttl_s)

    thread = threading.Thread(target=renew, name=f"lease-{name}", daemon=True)
    thread.start()
    try:
        yield lease
    finally:
        stop.set()
        thread.join(timeout=5)
        release_lease(settings, lease)
