"""The cache key of a stage task, so that re-running a crashed round recomputes only from where it died.

A stage's result is persisted under a key built from everything that decides its rows:
- the code (`tasks/code_version.py`: the commit, plus a hash of any uncommitted diff);
- the store (its LanceDB and object-store URIs and its `store-id`);
- the parameters of the flow it runs in (the round's index, input checkpoint and whole config: they decide
  every upstream stage too, which a stage's own arguments do not name);
- its own arguments and its source;
- every checkpoint folder named among those, by the modification time and size of its files (a checkpoint
  rewritten under the same name is a new input), except the stage's own output (`output_uri`): that folder is
  what the stage writes, so stamping it would change the key between the run that wrote it and the re-run.
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


OUTPUTS = ("output_uri",)  # arguments naming what a stage writes, not what it reads


def _checkpoint_stamps(value: Any, out: dict[str, list]) -> None:
    """Fingerprints of the local checkpoint folders named anywhere in `value` (outputs left out)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in OUTPUTS:
                _checkpoint_stamps(v, out)
    elif isinstance(value, list):
        for v in value:
            _checkpoint_stamps(v, out)
    elif isinstance(value, str) and value and "://" not in value[:12] and len(value) < 4096:
        folder = Path(value.removeprefix("file://"))
        if (folder / "config.json").is_file() and value not in out:
            out[value] = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                                for p in folder.iterdir() if p.is_file())


def inputs_key(flow_parameters: dict[str, Any], inputs: dict[str, Any] | None = None) -> str:
    """The hash of the code, the store, a flow's parameters, a task's own arguments and the checkpoints they name.
    Flows use it with no task arguments as the MLflow resume key of a round: a re-run of a crashed round (a new
    flow run) reopens the MLflow run of the one that died instead of leaving it RUNNING beside a second one."""
    settings = Settings.from_env()
    flow = _plain({k: v for k, v in (flow_parameters or {}).items() if k != "inject_fault"})
    own = _plain(inputs or {})
    stamps: dict[str, list] = {}
    _checkpoint_stamps({"flow": flow, "inputs": own}, stamps)
    return hash_objects({"code": code_version(), "store": [settings.lancedb_uri, settings.objects_uri,
                                                             store_id(settings)],
                         "flow": flow, "inputs": own, "checkpoints": stamps}, raise_on_failure=True)


class RoundInputs(CachePolicy):
    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        return inputs_key(flow_parameters, inputs)


STAGE_CACHE = RoundInputs() + TASK_SOURCE


def refreshing_cache() -> bool:
    """Whether this process recomputes every stage (`--fresh`: Prefect's refresh_cache setting)."""
    from prefect.settings import PREFECT_TASKS_REFRESH_CACHE

    return bool(PREFECT_TASKS_REFRESH_CACHE.value())
