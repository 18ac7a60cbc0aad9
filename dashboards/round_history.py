"""Round history from MLflow for the dashboard (read-only): per-round metrics, the promotion
decision, and links to each round's MLflow run and Prefect flow run."""

from __future__ import annotations

import os

import pandas as pd

from storage.settings import redacted

EXPERIMENTS = ("asg-nightly", "asg-evolution")
# The dashboard process's MLflow client defaults (set before mlflow is imported): a server that is down answers
# at once, so the page can say so instead of waiting through retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


class TrackingUnavailable(Exception):
    """MLflow cannot be read (server down, bad URI); the page says so instead of crashing."""


def round_runs(tracking_uri: str, experiments: tuple[str, ...] = EXPERIMENTS) -> pd.DataFrame:
    """One row per round run: round_idx, experiment, run id/name, status, metrics.*, promotion.*, links."""
    import mlflow

    try:
        mlflow.set_tracking_uri(tracking_uri)
        client = mlflow.tracking.MlflowClient(tracking_uri)
        found = [e for e in (client.get_experiment_by_name(name) for name in experiments) if e is not None]
        if not found:
            return pd.DataFrame()
        runs = mlflow.search_runs([e.experiment_id for e in found], filter_string="tags.round_idx != ''")
    except Exception as exc:
        raise TrackingUnavailable(f"cannot read MLflow at {redacted(tracking_uri)}: {type(exc).__name__}: {exc}") from exc
    if runs.empty:
        return pd.DataFrame()
    names = {e.experiment_id: e.name for e in found}
    runs = runs.assign(round_idx=runs["tags.round_idx"].astype(int),
                       experiment=runs["experiment_id"].map(names))
    runs["mlflow_link"] = [run_link(tracking_uri, e, r) for e, r in zip(runs["experiment_id"], runs["run_id"])]
    blank = pd.Series([None] * len(runs), index=runs.index)
    key = runs["tags.asg.flow_run_id"] if "tags.asg.flow_run_id" in runs else blank
    if "tags.asg.resume_key" in runs:  # runs written before the flow run id had a tag of its own
        key = key.where(key.notna() & (key != ""), runs["tags.asg.resume_key"])
    runs["prefect_link"] = [flow_run_link(k) for k in key]
    return runs.sort_values(["experiment", "round_idx", "start_time"]).reset_index(drop=True)


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    if tracking_uri.startswith("http"):
        return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"mlflow ui --backend-store-uri {redacted(tracking_uri)}  (run {run_id})"


def flow_run_link(flow_run_id: str | None) -> str:
    if not flow_run_id or not isinstance(flow_run_id, str):
        return ""
    ui = os.environ.get("PREFECT_UI_URL") or os.environ.get("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    return f"{ui.removesuffix('/api').rstrip('/')}/runs/flow-run/{flow_run_id}"
