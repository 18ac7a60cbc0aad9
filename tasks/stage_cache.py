"""The cache key of a stage task, so that re-running a crashed round recomputes only from where it died.

A stage's result is persisted under a key built from everything that decides its rows:
- the code (`tasks/code_version.py`: the commit, plus a hash of any uncommitted diff);
- the store (its LanceDB and object-store URIs and its `store-id`);
- the parameters of the flow it runs in (the round's index, input checkpoint and whole config: they decide
  every upstream stage too, which a stage's own arguments do not name);
- its own arguments and its source;
- every checkpoint folder named among those, by the modification time and size of its files (a checkpoint
  rewritten under the same name is a new input).
The flow run id is not part of it: a new `asg round` with the same arguments finds the finished stages of the
one that crashed. `asg round --fresh` (Prefect's refresh_cache) recomputes and overwrites them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.cache_policies import TASK_SOURCE, CachePolicy
from prefect.utilities.hashing import hash_objects

from storage.settings import Settings
from storage.store_id import store_id
from tasks.code_version import code_version


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return _plain(value.model_dump())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return _plain({f: getattr(value, f) for f in value.__dataclass_fields__})
    return value


def _checkpoint_stamps(value: Any, out: dict[str, list]) -> None:
    """Fingerprints of the local checkpoint folders named anywhere in `value`."""
    if isinstance(value, dict):
        for v in value.values():
            _checkpoint_stamps(v, out)
    elif isinstance(value, list):
        for v in value:
            _checkpoint_stamps(v, out)
    elif isinstance(value, str) and value and "://" not in value[:12] and len(value) < 4096:
        folder = Path(value.removeprefix("file://"))
        if (folder / "config.json").is_file() and value not in out:
            out[value] = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                                for p in folder.iterdir() if p.is_file())


class RoundInputs(CachePolicy):
    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        settings = Settings.from_env()
        flow = _plain({k: v for k, v in (flow_parameters or {}).items() if k != "inject_fault"})
        own = _plain(inputs)
        stamps: dict[str, list] = {}
        _checkpoint_stamps([flow, own], stamps)
        return hash_objects({"code": code_version(), "store": [settings.lancedb_uri, settings.objects_uri,
                                                                 store_id(settings)],
                             "flow": flow, "inputs": own, "checkpoints": stamps}, raise_on_failure=True)


STAGE_CACHE = RoundInputs() + TASK_SOURCE
