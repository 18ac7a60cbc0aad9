"""Which Prefect task runner runs the shards of a round's rollout stages.

    ASG_TASK_RUNNER=inprocess   # default: shards run one after another in the flow's process
    ASG_TASK_RUNNER=dask ASG_DASK_WORKERS=2            # a Dask LocalCluster of 2 worker processes
    ASG_TASK_RUNNER=dask ASG_DASK_ADDRESS=tcp://10.0.0.5:8786   # an existing Dask scheduler
    ASG_TASK_RUNNER=ray ASG_RAY_WORKERS=2              # a local Ray instance (pip install 'asg[ray]')
    ASG_TASK_RUNNER=ray ASG_RAY_ADDRESS=ray://10.0.0.5:10001    # an existing Ray cluster

or `asg round … --task-runner dask --workers 2 --shards 4`. The number of shards is a round
parameter (`RoundConfig.shards`); the runner only decides where they run, so the rows a round
writes do not depend on it. Workers of an existing cluster need the same ASG_* environment
(LanceDB, object store) as the flow. Each worker process loads a checkpoint once and keeps it
(tasks/round_inputs.py).
"""

from __future__ import annotations

import os
import tempfile

RUNNERS = ("inprocess", "dask", "ray")


def task_runner(kind: str | None = None, address: str | None = None, workers: int | None = None):
    """A Prefect task runner; arguments left out come from the environment (see the module docstring)."""
    kind = (kind or os.environ.get("ASG_TASK_RUNNER") or "inprocess").lower()
    if kind not in RUNNERS:
        raise ValueError(f"unknown task runner {kind!r} (ASG_TASK_RUNNER); runners are {', '.join(RUNNERS)}")
    if kind == "inprocess":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=1)
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        address = address or os.environ.get("ASG_DASK_ADDRESS") or None
        if address:
            return DaskTaskRunner(address=address)
        workers = _local_workers(workers, "ASG_DASK_WORKERS")
        return DaskTaskRunner(cluster_kwargs={
            "n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None,
            "host": "127.0.0.1", "local_directory": os.path.join(tempfile.gettempdir(), "asg-dask"),
            # Dask's nanny pins OMP/MKL to 1 thread per worker; ASG_TORCH_THREADS (read when a worker loads
            # a backbone, tasks/round_inputs.py) splits the cores between the workers instead.
            "env": {"ASG_TORCH_THREADS": str(_threads_per_worker(workers))}})
    try:
        from prefect_ray import RayTaskRunner
    except ImportError as exc:
        raise ValueError("ASG_TASK_RUNNER=ray needs the prefect-ray package: pip install 'asg[ray]' "
                         "(or pip install prefect-ray)") from exc
    address = address or os.environ.get("ASG_RAY_ADDRESS") or None
    if address:
        return RayTaskRunner(address=address)
    # A local Ray instance on 127.0.0.1 with one CPU per worker process and no dashboard.
    workers = _local_workers(workers, "ASG_RAY_WORKERS")
    return RayTaskRunner(init_kwargs={
        "num_cpus": workers, "include_dashboard": False, "_node_ip_address": "127.0.0.1",
        "runtime_env": {"env_vars": {"ASG_TORCH_THREADS": str(_threads_per_worker(workers))}}})


def _local_workers(workers: int | None, variable: str) -> int:
    workers = workers or int(os.environ.get(variable, "2"))
    if workers < 1:
        raise ValueError(f"{variable} (--workers) must be at least 1, got {workers}")
    return workers


def _threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def with_task_runner(flow, kind: str | None = None, address: str | None = None, workers: int | None = None):
    """`flow` with its task runner replaced (CLI options, tests, served deployments)."""
    return flow.with_options(task_runner=task_runner(kind, address, workers))
