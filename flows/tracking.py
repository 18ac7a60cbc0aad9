"""MLflow tracking for flows, behind one small object: the only module that writes to MLflow."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Iterator

import numpy as np
import pandas as pd

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


class Tracker:
    """One MLflow experiment; `run` opens a run (nested when one is open)."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: str | None = None):
        import mlflow

        self._mlflow = mlflow
        mlflow.set_tracking_uri(tracking_uri)
        if mlflow.get_experiment_by_name(experiment) is None:
            mlflow.create_experiment(experiment, artifact_location=artifact_root)
        mlflow.set_experiment(experiment)

    @contextlib.contextmanager
    def run(self, name: str, tags: dict[str, str] | None = None) -> Iterator[str]:
        nested = self._mlflow.active_run() is not None
        with self._mlflow.start_run(run_name=name, tags=tags, nested=nested) as run:
            yield run.info.run_id

    def log_params(self, params: dict) -> None:
        self._mlflow.log_params({k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, prefix: str = "") -> None:
        clean = {f"{prefix}{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.floating))}
        if clean:
            self._mlflow.log_metrics(clean, step=step)

    def log_series(self, name: str, values: list[float], every: int = 1) -> None:
        from mlflow.entities import Metric
        import time

        now = int(time.time() * 1000)
        metrics = [Metric(name, float(v), now, i) for i, v in enumerate(values) if i % every == 0]
        client = self._mlflow.tracking.MlflowClient()
        run_id = self._mlflow.active_run().info.run_id
        for start in range(0, len(metrics), 900):
            client.log_batch(run_id, metrics=metrics[start:start + 900])

    def log_table(self, frame: pd.DataFrame, path: str) -> None:
        self._mlflow.log_table(frame, artifact_file=path)

    def log_dict(self, data: dict, path: str) -> None:
        self._mlflow.log_dict(data, path)

    def log_artifacts(self, local_dir: str, path: str) -> None:
        self._mlflow.log_artifacts(local_dir, artifact_path=path)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._mlflow.set_tags(tags)
