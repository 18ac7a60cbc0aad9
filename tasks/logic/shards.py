"""Deterministic shards and per-item seeds: how a rollout stage splits its input.

An item (an image, a question, a spec) goes to shard `shard_of(key, n_shards)` by a hash of its
key, so the split depends only on the keys, never on the order they arrive in or on which worker
runs a shard. Its randomness comes from `item_seed(call_seed, key)`, so with a backbone that
honours per-item seeds (models/sampling.py) a sharded stage writes exactly the rows a single
process writes.

    >>> shard_of("r0:abc", 1)
    0
    >>> keys = [f"k{i}" for i in range(10)]
    >>> sorted(k for s in range(3) for k in in_shard(keys, s, 3)) == sorted(keys)  # every key in one shard
    True
"""

from __future__ import annotations

import hashlib
from typing import Sequence

MASK63 = (1 << 63) - 1


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def shard_of(key: str, n_shards: int) -> int:
    """The shard (0 … n_shards-1) an item with `key` belongs to."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be at least 1, got {n_shards}")
    return _hash64(key) % n_shards


def in_shard(keys: Sequence[str], shard_idx: int, n_shards: int) -> list[str]:
    """The keys of one shard, in input order."""
    if not 0 <= shard_idx < n_shards:
        raise ValueError(f"shard_idx {shard_idx} is outside 0..{n_shards - 1}")
    return [k for k in keys if shard_of(k, n_shards) == shard_idx]


def item_seed(call_seed: int, key: str) -> int:
    """A 63-bit seed for one item, a pure function of the call's seed and the item's key."""
    return _hash64(f"{call_seed}:{key}") & MASK63


def chunks(items: Sequence, size: int) -> list[Sequence]:
    """Consecutive slices of at most `size` items (how a shard bounds its memory)."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    return [items[i:i + size] for i in range(0, len(items), size)]


def spec_chunks(frame, size: int):
    """The rows of a frame (anything with a `spec_id` column and `isin`, e.g. pandas) `size` specs at a time, in
    sorted spec order, so a spec's rows (its L images) stay together; each chunk keeps the frame's row order.

    >>> import pandas as pd
    >>> rows = pd.DataFrame({"spec_id": ["b", "a", "c", "a"], "g": [1, 2, 3, 4]})
    >>> [part["g"].tolist() for part in spec_chunks(rows, 2)]
    [[1, 2, 4], [3]]
    """
    for part in chunks(sorted(set(frame["spec_id"])), size):
        yield frame[frame["spec_id"].isin(set(part))]
