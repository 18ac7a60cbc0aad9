"""MLflow tracking for flows, behind one small object: the only module that writes to MLflow."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Iterator

import numpy as np
import pandas as pd

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

RESUME_TAG = "asg.resume_key"
FLOW_RUN_TAG = "asg.flow_run_id"
CHECKPOINT_TAG = "asg.checkpoint_uri"
CHAMPION_ALIAS = "champion"


class Tracker:
    """One MLflow experiment; `run` opens a run (nested when one is open)."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: str | None = None):
        import mlflow

        self._mlflow = mlflow
        mlflow.set_tracking_uri(tracking_uri)
        if mlflow.get_experiment_by_name(experiment) is None:
            mlflow.create_experiment(experiment, artifact_location=artifact_root)
        self.experiment_id = mlflow.set_experiment(experiment).experiment_id

    @contextlib.contextmanager
    def run(self, name: str, tags: dict[str, str] | None = None, resume_key: str | None = None,
            fresh: bool = False) -> Iterator[str]:
        """Open a run. With `resume_key` the newest earlier run carrying the same key is reopened instead of
        starting a second one: a retried flow run (key: its flow run id) or a re-run of a crashed round (key: a
        hash of the round's inputs) completes one MLflow run, which ends FINISHED. `fresh` (a deliberate
        recompute, `--fresh`) starts a new run under the key instead. The Prefect flow run, when there is one,
        is tagged `asg.flow_run_id` (the latest one that touched the run)."""
        from prefect.runtime import flow_run as prefect_flow_run

        nested = self._mlflow.active_run() is not None
        tags = dict(tags or {})
        if prefect_flow_run.id:
            tags[FLOW_RUN_TAG] = str(prefect_flow_run.id)
        existing = None
        if resume_key:
            tags[RESUME_TAG] = resume_key
            found = [] if fresh else self._mlflow.search_runs(
                experiment_ids=[self.experiment_id], output_format="list", max_results=1,
                filter_string=f"tags.`{RESUME_TAG}` = '{resume_key}'", order_by=["attributes.start_time DESC"])
            existing = found[0].info.run_id if found else None
        if existing:
            with self._mlflow.start_run(run_id=existing, nested=nested) as run:
                self._mlflow.set_tags({**tags, "asg.resumed": "true"})
                yield run.info.run_id
            return
        with self._mlflow.start_run(run_name=name, tags=tags, nested=nested) as run:
            yield run.info.run_id

    # --- model registry: one registered model per deployment, alias "champion" on the promoted version

    def register_checkpoint(self, model_name: str, checkpoint_uri: str, tags: dict[str, str]) -> str:
        """Register the active run's logged `checkpoint` artifact as a new version of `model_name`
        (idempotent per run: a retried run gets its existing version back). Returns the version."""
        from mlflow.exceptions import MlflowException

        run = self._mlflow.active_run()
        client = self._client()
        try:
            client.create_registered_model(model_name)
        except MlflowException:
            pass  # already exists
        for version in client.search_model_versions(f"name = '{model_name}' and run_id = '{run.info.run_id}'"):
            return str(version.version)
        version = client.create_model_version(model_name, source=f"{run.info.artifact_uri}/checkpoint",
                                              run_id=run.info.run_id,
                                              tags={CHECKPOINT_TAG: checkpoint_uri, **tags})
        return str(version.version)

    def champion(self, model_name: str) -> dict | None:
        """{"version", "checkpoint_uri", "run_id"} of the version aliased `champion`, or None."""
        from mlflow.exceptions import MlflowException

        try:
            version = self._client().get_model_version_by_alias(model_name, CHAMPION_ALIAS)
        except MlflowException:
            return None
        return {"version": str(version.version), "checkpoint_uri": version.tags.get(CHECKPOINT_TAG, ""),
                "run_id": version.run_id}

    def set_champion(self, model_name: str, version: str) -> None:
        self._client().set_registered_model_alias(model_name, CHAMPION_ALIAS, version)

    def latest_run_tags(self, tags: dict[str, str]) -> dict[str, str] | None:
        """Tags (plus "run_id" and "status") of the newest run of this experiment carrying all of `tags`."""
        where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        found = self._mlflow.search_runs(experiment_ids=[self.experiment_id], output_format="list",
                                         filter_string=where, order_by=["attributes.start_time DESC"],
                                         max_results=1)
        if not found:
            return None
        return {**found[0].data.tags, "run_id": found[0].info.run_id, "status": found[0].info.status}

    def _client(self):
        return self._mlflow.tracking.MlflowClient()

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
