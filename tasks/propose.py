"""Propose stage: K candidate questions per image, the greedy STE spot-check, and selection.

Every candidate is stored in `questions` with its parse, raw STE u (max full-vocabulary
entropy of the first answer tokens of one greedy Solver pass, taken from the decoding
logits), its difficulty d_STE (percentile over a rolling window continued from earlier
rounds' stored values) and whether it was selected for solving.

Sharded: `propose_shard` runs the model calls for the images of one shard (any number of them in
parallel, on any task runner) and stages its rows; `propose_questions` merges the shards, scores
d_STE in the round's image order, selects one candidate per image and upserts `questions`.
"""

from __future__ import annotations

from models.protocol import SolveRequest
from storage.settings import Settings
from storage.shard_files import read_all_shards, write_shard
from storage.tables import connect, read, upsert
from tasks.logic.proposals import parse_question_proposal
from tasks.logic.selection import pick_candidate
from tasks.logic.shards import chunks, in_shard, item_seed
from tasks.logic.ste import STE_WINDOW, raw_ste, ste_difficulties
from tasks.round_inputs import backbone_for, images_by_id, round_image_ids, shard_result
from tasks.stage import stage_task
from tasks.stage_result import ShardResult, StageResult
from tasks.logic.stage_seeds import stage_seed


def ste_history(db, round_idx: int) -> list[float]:
    """Raw STE values of earlier rounds, oldest first (the persisted rolling window)."""
    frame = read(db, "questions", where=f"round_idx < {round_idx}", columns=["question_id", "round_idx", "ste_raw"])
    frame = frame.sort_values(["round_idx", "question_id"])
    return frame["ste_raw"].tolist()[-STE_WINDOW:]


@stage_task("propose-shard", "propose-questions-shard")
def propose_shard(round_idx: int, checkpoint_uri: str, source: str, n_images: int, shard_idx: int = 0,
                  n_shards: int = 1, n_candidates: int = 3, temperature: float = 1.0, seed: int = 0,
                  ste_aggregate: str = "max", chunk_images: int = 1024) -> ShardResult:
    """K candidates and their greedy spot-check for the round's images in shard `shard_idx`."""
    settings = Settings.from_env()
    db = connect(settings)
    order = {image_id: i for i, image_id in enumerate(round_image_ids(db, source, n_images, round_idx, seed))}
    mine = in_shard(list(order), shard_idx, n_shards)
    call_seed = stage_seed("propose", seed, round_idx)
    rows = []
    backbone = backbone_for(checkpoint_uri, settings) if mine else None
    for chunk in chunks(mine, chunk_images):
        images = images_by_id(db, "images", "image_id", list(chunk))
        raw = backbone.propose_questions(images, n_candidates, temperature,
                                         seed=[item_seed(call_seed, image_id) for image_id in chunk])
        requests, part = [], []
        for image_id, image, texts in zip(chunk, images, raw):
            for k, text in enumerate(texts):
                parsed = parse_question_proposal(text)
                part.append({"question_id": f"r{round_idx}:{image_id}:k{k}", "round_idx": round_idx,
                             "image_id": image_id, "candidate_idx": k, "raw_text": text, "question": parsed.question,
                             "validator_a": (parsed.validators + ("", ""))[0],
                             "validator_b": (parsed.validators + ("", ""))[1], "well_formed": parsed.well_formed,
                             "reject_reason": parsed.reject_reason, "image_order": order[image_id]})
                requests.append(SolveRequest(image, parsed.question, "canonical", temperature=0.0))
        for row, result in zip(part, backbone.solve(requests, seed=seed)):
            row.update(greedy_answer=result.text, ste_raw=raw_ste(result.token_entropies, aggregate=ste_aggregate))
        rows += part
    write_shard(settings, round_idx, "propose", "questions", shard_idx, n_shards, rows)
    return shard_result("propose", round_idx, shard_idx, n_shards, len(rows))


@stage_task("propose", "propose-questions")
def propose_questions(round_idx: int, n_shards: int = 1, n_candidates: int = 3, use_ste: bool = True,
                      shards: list[ShardResult] | None = None) -> StageResult:
    """Merge the shards: d_STE in the round's image order, one selected candidate per image.

    use_ste False is the "STE off" ablation: every candidate gets d_STE 0.5 and the first
    well-formed one is selected. `shards` (the shard tasks' results) only orders this after them.
    """
    settings = Settings.from_env()
    db = connect(settings)
    frame = read_all_shards(settings, round_idx, "propose", "questions", n_shards)
    if len(frame):
        frame = frame.sort_values(["image_order", "candidate_idx"]).drop(columns=["image_order"])
    rows = frame.to_dict("records")
    us = [r["ste_raw"] for r in rows]
    difficulties = ste_difficulties(us, ste_history(db, round_idx)) if use_ste else [0.5] * len(us)
    for row, d in zip(rows, difficulties):
        row.update(ste_difficulty=d, selected=False)
    for start in range(0, len(rows), n_candidates):
        group = rows[start:start + n_candidates]
        scored = [(r["ste_raw"] if use_ste else -k, r["well_formed"], r["ste_difficulty"]) for k, r in enumerate(group)]
        best = pick_candidate(scored)
        if best is not None:
            group[best]["selected"] = True
    version = upsert(db, "questions", rows, replace_where=f"round_idx = {round_idx}")
    selected = [r for r in rows if r["selected"]]
    metrics = {
        "candidates": len(rows), "selected": len(selected),
        "well_formed_share": sum(r["well_formed"] for r in rows) / max(1, len(rows)),
        "distinct_questions": len({r["question"] for r in selected}),
        "ste_mean": sum(us) / max(1, len(us)),
        "ste_selected_mean": sum(r["ste_raw"] for r in selected) / max(1, len(selected)),
    }
    return StageResult("propose", round_idx, {"questions": version}, len(rows), metrics)
