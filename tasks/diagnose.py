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
from tasks.gold_labels import composed_truths, correct_generations, correct_images, scene_of_source, true_answers
from tasks.logic.answers import map_to_validators, normalize_answer
from tasks.logic.diagnostics import auroc, family_entropy, share
from tasks.logic.label_sources import agreement_decision, audit_rows, question_kind
from tasks.logic.voting import vote
from tasks.round_inputs import images_by_id
from tasks.stage import stage_task
from tasks.stage_result import StageResult
from world import language, parser

CHUNK_ROWS = 4096  # training examples judged at a time


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
            scenes[image_id] = scene_of_source(images.get(image_id, ""))
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


def _generation_metrics(db, round_idx: int, accept_reward: float, correct: dict[str, bool]) -> dict[str, float]:
    where = f"round_idx = {round_idx}"
    scores = read(db, "scores", where=where, columns=["generation_id", "reward"])
    if scores.empty:
        return {}
    truth = [correct.get(g, False) for g in scores["generation_id"]]
    accepted = [t for t, r in zip(truth, scores["reward"]) if r >= accept_reward]
    return {"generation_true_accuracy": share(truth), "reward_precision": share(accepted),
            "reward_recall": sum(accepted) / max(1, sum(truth)), "accepted_share": len(accepted) / len(truth),
            "auroc_reward_correct": auroc(scores["reward"].tolist(), truth)}


def _generator_target_metrics(db, round_idx: int, correct: dict[str, bool]) -> dict[str, float]:
    """How often the images the Generator is trained on truly show their prompt, and how exact the tile reading
    of the round's images is (compose preset: `tile_verdicts`)."""
    where = f"round_idx = {round_idx}"
    metrics: dict[str, float] = {}
    targets = read(db, "training_examples", where=f"{where} AND role = 'generator' AND image_table IN "
                   "('generations', 'tile_corrections')", columns=["image_table", "image_key"])
    flags = [correct.get(k, False) for k in targets.loc[targets["image_table"] == "generations", "image_key"]]
    fixed = targets.loc[targets["image_table"] == "tile_corrections", "image_key"]
    if not fixed.empty:
        truth = correct_images(db, "tile_corrections", "correction_id", round_idx)
        fixed_flags = [truth.get(k, False) for k in fixed]
        metrics["tile_correction_accuracy"] = share(fixed_flags)
        metrics["tile_corrections_trained"] = float(len(fixed_flags))
        flags += fixed_flags
    if flags:
        metrics["generator_target_accuracy"] = share(flags)
        metrics["generator_targets"] = float(len(flags))
    verdicts = read(db, "tile_verdicts", where=where, columns=["generation_id", "verdict"])
    read_ones = verdicts[verdicts["verdict"].isin(["match", "mismatch"])]
    if not read_ones.empty:
        truth = [correct.get(g, False) for g in read_ones["generation_id"]]
        said = (read_ones["verdict"] == "match").tolist()
        metrics["tile_verdict_agreement"] = share([t == v for t, v in zip(truth, said)])
        metrics["tile_match_precision"] = share([t for t, v in zip(truth, said) if v]) if any(said) else 0.0
        metrics["tile_match_recall"] = sum(t and v for t, v in zip(truth, said)) / max(1, sum(truth))
        metrics["tile_read_share"] = len(read_ones) / len(verdicts)
        metrics.update(_preference_pair_metrics(read_ones, correct))
    return metrics


def _preference_pair_metrics(read_ones, correct: dict[str, bool]) -> dict[str, float]:
    """How right the preference update's pairs are (every matched and mismatched sample of a spec that has both
    is in some pair, whatever the pairing seed): chosen samples truly correct, rejected ones truly wrong."""
    sides = read_ones.assign(spec_id=read_ones["generation_id"].str.rsplit(":g", n=1).str[0])
    mixed = sides.groupby("spec_id")["verdict"].transform("nunique") == 2
    chosen = sides.loc[mixed & (sides["verdict"] == "match"), "generation_id"]
    rejected = sides.loc[mixed & (sides["verdict"] == "mismatch"), "generation_id"]
    if chosen.empty:
        return {}
    return {"preference_chosen_correct": share([correct.get(g, False) for g in chosen]),
            "preference_rejected_wrong": share([not correct.get(g, False) for g in rejected]),
            "preference_samples": float(len(chosen) + len(rejected))}


def _question_audit_records(db, round_idx: int) -> list[dict]:
    """One record per (selected, well-posed question, label source that yields it)."""
    where = f"round_idx = {round_idx}"
    questions = read(db, "questions", where=f"{where} AND selected = true AND well_formed = true")
    if questions.empty:
        return []
    items = questions.merge(read(db, "votes", where=where), on=["question_id", "round_idx"])
    checks = read(db, "cross_checks", where=where).set_index("question_id").to_dict("index")
    items = items.to_dict("records")
    truths = true_answers(db, items)
    records = []
    for item in items:
        truth = truths.get(item["question_id"])
        if truth is None:
            continue
        kind = question_kind(item["question"])
        greedy = map_to_validators(item["greedy_answer"], (item["validator_a"], item["validator_b"])) == truth
        check = checks.get(item["question_id"], {})
        flip, drawn = check.get("flip_answer"), check.get("caption_view_answer")
        label = item["majority"]
        sources = ["majority"]
        if item["bucket"] in ("medium", "hard"):
            sources.append("majority-medium-hard")
        if check and flip == label:
            sources.append("flip-agreement")
        if check and drawn == label:
            sources.append("caption-agreement")
        if check and item["bucket"] != "unsolvable" and agreement_decision(kind, label, flip, drawn)[0]:
            sources.append("agreement-preset")
        records += [{"kind": kind, "source": src, "label_correct": label == truth, "greedy_correct": greedy}
                    for src in sources]
        if check:
            records.append({"kind": kind, "source": "flip-view-answer", "label_correct": flip == truth,
                            "greedy_correct": greedy})
    return records


def _generation_audit_records(db, round_idx: int, accept_reward: float) -> list[dict]:
    """The checks of Solver-accepted generated images as VQA labels, judged on the parsed image."""
    where = f"round_idx = {round_idx}"
    scores = read(db, "scores", where=f"{where} AND reward >= {accept_reward}",
                  columns=["generation_id", "spec_id", "check_answers_json"])
    if scores.empty:
        return []
    specs = read(db, "specs", where=where, columns=["spec_id", "checks_json"]).set_index("spec_id")["checks_json"]
    gens = read(db, "generations", where=where, columns=["generation_id", "png"]).set_index("generation_id")["png"]
    records = []
    for row in scores.itertuples():
        scene = parser.parsed_scene(decode_png(gens[row.generation_id]))
        if scene is None:
            continue
        for (question, expected), answers in zip(json.loads(specs[row.spec_id]), json.loads(row.check_answers_json)):
            truth = _oracle_or_none(scene, question)
            if truth is None:
                continue
            solver = vote(answers).majority if answers else ""
            records.append({"kind": question_kind(question), "source": "generation-checks",
                            "label_correct": normalize_answer(expected) == truth, "greedy_correct": solver == truth})
    return records


def _composition_audit_records(compositions, truths: dict) -> list[dict]:
    """The labels of recomposed scenes (compose stage), judged on the source's hidden objects moved as placed."""
    records = []
    for row in compositions.itertuples():
        scene = truths.get(row.composition_id)
        if scene is None:
            continue
        for (question, label, _family), greedy in zip(json.loads(row.questions_json), json.loads(row.greedy_json)):
            truth = language.oracle_answer(scene, question)
            records.append({"kind": question_kind(question), "source": "composition",
                            "label_correct": label == truth, "greedy_correct": greedy == truth})
    return records


def _composition_metrics(compositions, truths: dict) -> dict[str, float]:
    """How often a composed image's named objects are what its tiles really show."""
    flags = []
    for row in compositions.itertuples():
        scene = truths.get(row.composition_id)
        if scene is not None:
            true_at = {o.cell: (o.color, o.shape) for o in scene.objects}
            flags += [true_at.get(cell) == (color, shape) for color, shape, cell in json.loads(row.objects_json)]
    return {"compose_name_accuracy": share(flags), "compose_objects": float(len(flags))} if flags else {}


def _oracle_or_none(scene, question: str) -> str | None:
    """The oracle's answer on a parsed generated image; None where the image leaves the world (e.g. 16 objects)."""
    try:
        return language.oracle_answer(scene, question)
    except ValueError:
        return None


def _solver_target_metrics(db, round_idx: int, composed: dict) -> dict[str, float]:
    """How often the labels the Solver is actually trained on (positive weight) are true, whatever the preset."""
    frame = read(db, "training_examples", where=f"round_idx = {round_idx} AND role = 'solver' AND kind = 'vqa' "
                                               f"AND weight > 0",
                 columns=["example_id", "image_table", "image_key", "prompt", "target"])
    if frame.empty:
        return {}
    right = total = 0
    for part in (frame.iloc[s:s + CHUNK_ROWS] for s in range(0, len(frame), CHUNK_ROWS)):
        own = part[part["image_table"] == "images"].to_dict("records")
        truths = true_answers(db, [{"question_id": r["example_id"], "image_id": r["image_key"], "question": r["prompt"]}
                                   for r in own])
        flags = [truths.get(r["example_id"]) == normalize_answer(r["target"]) for r in own]
        drawn = part[part["image_table"] == "generations"].to_dict("records")
        if drawn:
            keys = sorted({r["image_key"] for r in drawn})
            scenes = dict(zip(keys, (parser.parsed_scene(image)
                                     for image in images_by_id(db, "generations", "generation_id", keys))))
            flags += [scenes[r["image_key"]] is not None
                      and _oracle_or_none(scenes[r["image_key"]], r["prompt"]) == normalize_answer(r["target"])
                      for r in drawn]
        flags += [composed.get(r["image_key"]) is not None
                  and language.oracle_answer(composed[r["image_key"]], r["prompt"]) == normalize_answer(r["target"])
                  for r in part[part["image_table"] == "compositions"].to_dict("records")]
        right, total = right + sum(flags), total + len(flags)
    return {"solver_target_accuracy": right / total if total else float("nan"), "solver_targets": float(total)}


def label_audit(db, round_idx: int, accept_reward: float, compositions, composed: dict) -> list[dict]:
    """Per question kind and label source: yield, label accuracy, the Solver's accuracy on the same items."""
    records = (_question_audit_records(db, round_idx) + _generation_audit_records(db, round_idx, accept_reward)
               + _composition_audit_records(compositions, composed))
    rows = audit_rows(records)
    for source in sorted({r["source"] for r in records}):
        own = [r for r in records if r["source"] == source]
        rows += audit_rows([{**r, "kind": "all"} for r in own])
    return rows


@stage_task("diagnose", "diagnose-round")
def diagnose_round(round_idx: int, accept_reward: float = 0.7, tables: dict[str, int] | None = None,
                   namespace: str = "") -> StageResult:
    db = connect(Settings.from_env().within(namespace), at=tables)
    compositions = read(db, "compositions", where=f"round_idx = {round_idx}",
                        columns=["composition_id", "image_id", "placement_json", "objects_json", "questions_json",
                                 "greedy_json"])
    composed = composed_truths(db, compositions)
    correct = correct_generations(db, round_idx)
    metrics = {**_question_metrics(db, round_idx), **_generation_metrics(db, round_idx, accept_reward, correct),
               **_generator_target_metrics(db, round_idx, correct),
               **_solver_target_metrics(db, round_idx, composed), **_composition_metrics(compositions, composed)}
    audit = label_audit(db, round_idx, accept_reward, compositions, composed)
    for row in audit:
        for field in ("items", "label_accuracy", "greedy_accuracy"):
            metrics[f"audit.{row['kind']}.{row['source']}.{field}"] = float(row[field])
    version = upsert(db, "evaluations", [
        {"evaluation_id": f"round-{round_idx}:diagnostics", "checkpoint_uri": "", "round_idx": round_idx,
         "suite": "diagnostics", "metrics_json": json.dumps(metrics)},
        {"evaluation_id": f"round-{round_idx}:label-audit", "checkpoint_uri": "", "round_idx": round_idx,
         "suite": "label-audit", "metrics_json": json.dumps(audit)}])
    return StageResult("diagnose", round_idx, {"evaluations": version}, 1, metrics)
