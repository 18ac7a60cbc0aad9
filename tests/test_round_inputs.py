"""The process's backbone cache: each checkpoint version loaded once, the two most recent kept, and private copies
that leave the cached backbone untouched."""

import torch

from models.shapes_backbone import ShapesBackbone, ShapesConfig
from storage.settings import Settings
from tasks.round_inputs import BackboneCache, _cache_key, private_backbone, PROCESS_BACKBONES


def _checkpoints(tmp_path, n):
    paths = []
    for k in range(n):
        path = tmp_path / f"ckpt-{k}"
        ShapesBackbone.create(ShapesConfig.tiny(), seed=k).save(path)
        paths.append(path)
    return paths


def test_each_version_loads_once_and_the_least_recent_is_dropped(asg_home, tmp_path):
    settings = Settings.from_env()
    a, b, c = (_cache_key(str(p), settings) for p in _checkpoints(tmp_path, 3))
    cache = BackboneCache(size=2)
    first = cache.get(a)
    assert cache.get(a) is first and cache.loads == 1 and cache.holds(a)
    cache.get(b)
    cache.get(a)  # a is now the most recent
    cache.get(c)  # drops b
    assert cache.loads == 3 and cache.holds(a) and cache.holds(c) and not cache.holds(b)
    cache.get(b)
    assert cache.loads == 4 and not cache.holds(a)


def test_a_private_copy_trains_without_touching_the_cached_backbone(asg_home, tmp_path):
    (path,) = _checkpoints(tmp_path, 1)
    settings = Settings.from_env()
    key = _cache_key(str(path), settings)
    cached = PROCESS_BACKBONES.get(key)
    loads = PROCESS_BACKBONES.loads
    before = [p.detach().clone() for p in cached.trainable_parameters("solver")]
    copy = private_backbone(str(path), settings)
    assert PROCESS_BACKBONES.loads == loads  # copied from memory, not loaded again
    with torch.no_grad():
        for p in copy.trainable_parameters("solver"):
            p.add_(1.0)
    assert all(torch.equal(x, y) for x, y in zip(before, cached.trainable_parameters("solver")))
    assert all(torch.equal(x + 1.0, y) for x, y in zip(before, copy.trainable_parameters("solver")))
