"""Lineage of a round: the code that ran it, its Prefect flow run, its checkpoint and the table versions it left.

At the end of every round the LanceDB tables are tagged `round-<R>` at their versions then, and the round's
MLflow run gets `lineage.*` tags: the git commit (with "-dirty-<diff hash>" when tracked files had changes;
the package version outside a checkout), the Prefect flow run id, the output checkpoint URI and each table's version.
Reading the tables at the tag reproduces what the round's fine-tune read (tests/test_lineage.py).

    asg lineage --round-idx 3                 # the latest run of round 3 in experiment asg-evolution
    asg lineage --round-idx 0 --experiment asg-nightly
"""

from __future__ import annotations

from flows.tracking import Tracker
from storage.settings import Settings, redacted
from storage.tables import connect, current_versions, round_tag, tag_tables, tagged_versions
from tasks.code_version import code_version

PREFIX = "lineage."


def record_round_lineage(round_idx: int, checkpoint_uri: str, flow_run_id: str, settings: Settings) -> dict[str, str]:
    """Tag every table at its current version as `round-<R>` and return the MLflow tags of the round's lineage."""
    db = connect(settings)
    versions = current_versions(db)
    tag = round_tag(round_idx)
    tag_tables(db, tag, versions)
    return {f"{PREFIX}code_version": code_version(), f"{PREFIX}prefect_flow_run_id": flow_run_id,
            f"{PREFIX}checkpoint_uri": checkpoint_uri, f"{PREFIX}lancedb_tag": tag,
            **{f"{PREFIX}table_version.{name}": str(v) for name, v in sorted(versions.items())}}


def round_lineage(round_idx: int, experiment: str, settings: Settings) -> dict:
    """What `asg lineage` prints: the newest MLflow run of the round and the store's `round-<R>` tags."""
    tracker = Tracker(settings.mlflow_uri, experiment)
    tags = tracker.latest_run_tags({"round_idx": str(round_idx)})
    if tags is None:
        raise ValueError(f"no MLflow run of round {round_idx} in experiment {experiment!r} at {redacted(settings.mlflow_uri)}")
    recorded = {k.removeprefix(f"{PREFIX}table_version."): int(v) for k, v in tags.items()
                if k.startswith(f"{PREFIX}table_version.")}
    return {"round_idx": round_idx, "experiment": experiment, "mlflow_run_id": tags["run_id"],
            "mlflow_status": tags["status"], "code_version": tags.get(f"{PREFIX}code_version", ""),
            "prefect_flow_run_id": tags.get(f"{PREFIX}prefect_flow_run_id", ""),
            "checkpoint_uri": tags.get(f"{PREFIX}checkpoint_uri", ""), "table_versions": recorded,
            "lancedb_tag": round_tag(round_idx), "tagged_versions": tagged_versions(connect(settings),
                                                                                round_tag(round_idx))}


def format_lineage(lineage: dict) -> str:
    lines = [f"round {lineage['round_idx']} (MLflow experiment {lineage['experiment']}, run "
             f"{lineage['mlflow_run_id']}, {lineage['mlflow_status']})",
             f"  code:             {lineage['code_version'] or '(not recorded)'}",
             f"  Prefect flow run: {lineage['prefect_flow_run_id'] or '(not recorded)'}",
             f"  checkpoint:       {lineage['checkpoint_uri'] or '(not recorded)'}",
             f"  LanceDB tag:      {lineage['lancedb_tag']}",
             "  table versions (MLflow / tag in the store):"]
    names = sorted(set(lineage["table_versions"]) | set(lineage["tagged_versions"]))
    for name in names:
        recorded, tagged = lineage["table_versions"].get(name), lineage["tagged_versions"].get(name)
        note = "" if recorded == tagged else "  (differ: the tag was moved by a later run of this round)"
        lines.append(f"    {name:<18} {recorded if recorded is not None else '-':>6} / "
                     f"{tagged if tagged is not None else '-'}{note}")
    return "\n".join(lines)
