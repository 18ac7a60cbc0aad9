"""Diagnose stage: how good were this round's self-made labels and rewards? (evaluation only)

For images from the embedded world, the hidden scene is rebuilt from the image's source URI and
the world's oracle and pixel parser judge the round's pseudo-labels and generations. Nothing here
is written where training reads it. Label-free collapse signals are computed for any source.
Results go to the `evaluations` table (suite "diagnostics") and back to the flow for MLflow.
"""

from __future__ import annotations

import json

from storage.image_files import decode_png
from storage.settings import Settings
from storage.tables import connect, read, upsert
from tasks.logic.diagnostics import auroc, family_entropy, share
from tasks.stage import stage_task
from tasks.stage_result import StageResult
from world import language, parser, splits


def _scene(source_uri: str):
    if not source_uri.startswith("world://"):
        return None
    split, index, seed = splits.parse_source_uri(source_uri)
    return splits.scene_at(split, index, seed)


def _question_metrics(db, round_idx: int) -> dict[str, float]:
    where = f"round_idx = {round_idx}"
    questions = read(db, "questions", where=f"{where} AND selected = true")
    if questions.empty:
        return {}
    votes = read(db, "votes", where=where)
    items = questions.merge(votes, on=["question_id", "round_idx"])
    images = read(db, "images", columns=["image_id", "source_uri"]).set_index("image_id")["source_uri"]
    kept = read(db, "filter_decisions", where=f"{where} AND item_kind = 'question'")
    kept_ids = set(kept.loc[kept["kept"], "item_id"])
    metrics = {"distinct_question_share": items["question"].nunique() / len(items),
               "family_entropy": family_entropy([language.question_family(q) or "other" for q in items["question"]]),
               "mean_ste": float(items["ste_raw"].mean()), "mean_agreement": float(items["majority_fraction"].mean())}
    scenes: dict[str, object] = {}  # an image's scene is rebuilt once, not once per question
    rows = []
    for item in items.to_dict("records"):
        image_id = item["image_id"]
        if image_id not in scenes:
            scenes[image_id] = _scene(images.get(image_id, ""))
        scene = scenes[image_id]
        if scene is None:
            continue
        truth = language.oracle_answer(scene, item["question"])
        rows.append((item, truth))
    if not rows:
        return metrics
    posed = [(item, truth) for item, truth in rows if truth is not None]
    correct = [item["majority"] == truth for item, truth in posed]
    metrics.update({
        "well_posed_share": len(posed) / len(rows),
        "pseudo_label_accuracy": share(correct),
        "pseudo_label_accuracy_kept": share([c for (item, _), c in zip(posed, correct) if item["question_id"] in kept_ids]),
        "auroc_ste_error": auroc([item["ste_raw"] for item, _ in posed], [not c for c in correct]),
        "auroc_disagreement_error": auroc([1 - item["majority_fraction"] for item, _ in posed], [not c for c in correct]),
    })
    for bucket in ("easy", "medium", "hard", "unsolvable"):
        flags = [c for (item, _), c in zip(posed, correct) if item["bucket"] == bucket]
        if flags:
            metrics[f"pseudo_label_accuracy_{bucket}"] = share(flags)
    return metrics


def _generation_metrics(db, round_idx: int, accept_reward: float) -> dict[str, float]:
    where = f"round_idx = {round_idx}"
    gens = read(db, "generations", where=where, columns=["generation_id", "prompt", "png"])
    if gens.empty:
        return {}
    scores = read(db, "scores", where=where, columns=["generation_id", "reward"])
    frame = gens.merge(scores, on="generation_id")
    truth = []
    for row in frame.itertuples():
        try:
            truth.append(parser.check_prompt(decode_png(row.png), row.prompt))
        except ValueError:  # a prompt outside the world's grammar has no parser verdict
            truth.append(False)
    accepted = [t for t, r in zip(truth, frame["reward"]) if r >= accept_reward]
    return {"generation_true_accuracy": share(truth), "reward_precision": share(accepted),
            "reward_recall": sum(accepted) / max(1, sum(truth)), "accepted_share": len(accepted) / len(truth),
            "auroc_reward_correct": auroc(frame["reward"].tolist(), truth)}


@stage_task("diagnose", "diagnose-round")
def diagnose_round(round_idx: int, accept_reward: float = 0.7) -> StageResult:
    db = connect(Settings.from_env())
    metrics = {**_question_metrics(db, round_idx), **_generation_metrics(db, round_idx, accept_reward)}
    version = upsert(db, "evaluations", [{
        "evaluation_id": f"round-{round_idx}:diagnostics", "checkpoint_uri": "", "round_idx": round_idx,
        "suite": "diagnostics", "metrics_json": json.dumps(metrics)}])
    return StageResult("diagnose", round_idx, {"evaluations": version}, 1, metrics)
