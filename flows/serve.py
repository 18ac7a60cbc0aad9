"""Deployments of asg, served by one long-lived process (`asg serve`).

    asg serve                                         # nightly (cpu-tiny preset) at 02:00 UTC, plus
                                                      # on-demand evaluate and pretrain deployments
    asg serve --preset single-gpu --cron "30 1 * * *" --timezone Europe/Berlin

Needs a Prefect server (`prefect server start --host 127.0.0.1`, PREFECT_API_URL pointing at it).
Runs of these deployments can be retried from the Prefect UI: the nightly flow's stages are
persisted tasks, so a retry resumes at the failed stage. For a worker on a process work pool
instead of `serve`, see infra/prefect.yaml.
"""

from __future__ import annotations

from prefect import serve
from prefect.schedules import Cron

from flows.evaluate import evaluate_flow
from flows.nightly import NIGHTLY_PRESETS, nightly_flow
from flows.pretrain import pretrain_flow

DEFAULT_CRON = "0 2 * * *"


def build_deployments(preset: str = "cpu-tiny", cron: str = DEFAULT_CRON, timezone: str = "UTC",
                      parameters: dict | None = None) -> list:
    if preset not in NIGHTLY_PRESETS:
        raise ValueError(f"unknown nightly preset {preset!r}; presets are {', '.join(NIGHTLY_PRESETS)}")
    try:
        schedule = Cron(cron, timezone=timezone)
    except Exception as exc:  # croniter / zoneinfo errors: name the bad input
        raise ValueError(f"bad schedule cron={cron!r} timezone={timezone!r}: {exc}") from exc
    nightly_parameters = {"config": NIGHTLY_PRESETS[preset], **(parameters or {})}
    return [
        nightly_flow.to_deployment(name=f"nightly-{preset}", schedule=schedule, parameters=nightly_parameters,
                                   tags=["asg", "nightly", preset],
                                   description=f"One self-evolution round per night ({preset} preset) with "
                                               "the promotion gate."),
        evaluate_flow.to_deployment(name="evaluate", tags=["asg"],
                                    description="Score a checkpoint on the held-out sets or external files."),
        pretrain_flow.to_deployment(name="pretrain", tags=["asg"],
                                    description="Pretrain a base on the labeled seed set."),
    ]


def serve_deployments(preset: str = "cpu-tiny", cron: str = DEFAULT_CRON, timezone: str = "UTC",
                      parameters: dict | None = None, limit: int = 1) -> None:
    """Block, running the deployments' scheduled and triggered runs (one at a time by default)."""
    serve(*build_deployments(preset, cron, timezone, parameters), limit=limit)
