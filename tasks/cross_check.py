"""Cross-check stage: two more views of every selected question, answered by the same backbone.

For each selected question (tasks/logic/label_sources.py says why):
- the Solver's greedy answer on the horizontally mirrored image, left and right swapped in the question;
- the Solver's greedy caption of the image, one image the Generator draws from that caption, and the
  Solver's greedy answer on the drawn image.
Only the backbone protocol is used (solve, caption, generate_images), so any backbone has these views.
Writes `cross_checks` (one row per question). The `agreement` preset keeps a pseudo-label only where
the views its question kind needs agree with it; the diagnose stage audits every view.

Sharded by image (tasks/sharded_stage.py runs `CROSS_CHECK`): `cross_check_rows` makes one shard's rows
(per-item seeds keyed by image and question ids), `merge_cross_checks` upserts every shard's rows.
The model calls of a chunk are `cross_check_chunk`, in memory (benchmarks/round_overhead.py's bare loop calls it too).
"""

from __future__ import annotations

import pyarrow as pa
from tqdm.auto import tqdm

from models.protocol import SolveRequest
from storage.arrow_rows import ArrowRows
from storage.settings import Settings
from storage.tables import connect, read, upsert
from tasks.logic.answers import map_to_validators
from tasks.logic.label_sources import mirror_question
from tasks.logic.shards import chunks, item_seed, shard_of
from tasks.round_inputs import backbone_for, images_by_id
from tasks.sharded_stage import StagedRows, sharded_stage
from tasks.stage_result import StageResult
from tasks.logic.stage_seeds import stage_seed


def cross_check_rows(settings: Settings, shard_idx: int, n_shards: int, round_idx: int, checkpoint_uri: str,
                     temperature: float = 1.0, seed: int = 0, chunk_images: int = 256,
                     tables: dict[str, int] | None = None) -> dict[str, pa.Table]:
    db = connect(settings, at=tables)
    questions = read(db, "questions", where=f"round_idx = {round_idx} AND selected = true",
                     columns=["question_id", "image_id", "question", "validator_a", "validator_b"])
    records = [q for q in questions.to_dict("records") if shard_of(q["image_id"], n_shards) == shard_idx]
    records.sort(key=lambda q: q["question_id"])
    by_image: dict[str, list[dict]] = {}
    for q in records:
        by_image.setdefault(q["image_id"], []).append(q)
    image_ids = sorted(by_image)
    backbone = backbone_for(checkpoint_uri, settings) if image_ids else None
    rows = ArrowRows()
    bar = tqdm(total=len(image_ids), desc=f"cross-check shard {shard_idx}/{n_shards}", unit="image")
    for ids in chunks(image_ids, chunk_images):
        images = images_by_id(db, "images", "image_id", list(ids))
        rows.extend(cross_check_chunk(backbone, list(ids), images, by_image, round_idx, temperature, seed))
        bar.update(len(ids))
    bar.close()
    return {"cross_checks": rows.table()}


def cross_check_chunk(backbone, image_ids: list[str], images: list, by_image: dict[str, list[dict]], round_idx: int,
                      temperature: float, seed: int) -> list[dict]:
    """The model calls of a chunk of images, in memory: each image's caption and the picture drawn from it, then
    the greedy answer to each of its selected questions (`by_image`) on the mirrored image and on the picture."""
    call_seed = stage_seed("cross-check", seed, round_idx)
    captions = backbone.caption(images)
    drawn = backbone.generate_images(captions, 1, temperature, [item_seed(call_seed, i) for i in image_ids])
    requests, keys = [], []
    for image_id, image, picture in zip(image_ids, images, drawn):
        mirrored = image[:, ::-1].copy()
        for q in by_image[image_id]:
            q = {**q, "flip_question": mirror_question(q["question"])}
            requests += [SolveRequest(mirrored, q["flip_question"], "canonical", 0.0, 1.0),
                         SolveRequest(picture[0], q["question"], "canonical", 0.0, 1.0)]
            keys.append(q)
    results = backbone.solve(requests, seed=[item_seed(call_seed, f"{q['question_id']}:{v}")
                                             for q in keys for v in ("flip", "caption")])
    caption_of = dict(zip(image_ids, captions))
    part = []
    for j, q in enumerate(keys):
        validators = (q["validator_a"], q["validator_b"])
        flip, drawn_answer = results[2 * j].text, results[2 * j + 1].text
        part.append({"question_id": q["question_id"], "round_idx": round_idx, "image_id": q["image_id"],
                     "flip_question": q["flip_question"], "flip_text": flip,
                     "flip_answer": map_to_validators(flip, validators), "caption": caption_of[q["image_id"]],
                     "caption_view_text": drawn_answer,
                     "caption_view_answer": map_to_validators(drawn_answer, validators)})
    return part


def merge_cross_checks(settings: Settings, staged: StagedRows, round_idx: int,
                       tables: dict[str, int] | None = None) -> StageResult:
    db = connect(settings, at=tables)
    rows = staged.table("cross_checks", sort_by="question_id").to_pylist()  # one per question
    version = upsert(db, "cross_checks", rows, replace_where=f"round_idx = {round_idx}")
    votes = read(db, "votes", where=f"round_idx = {round_idx}").to_dict("records")
    majority = {v["question_id"]: v["majority"] for v in votes}
    n = max(1, len(rows))
    metrics = {"questions_checked": len(rows),
               "flip_agrees_share": sum(r["flip_answer"] == majority.get(r["question_id"]) for r in rows) / n,
               "caption_agrees_share": sum(r["caption_view_answer"] == majority.get(r["question_id"])
                                           for r in rows) / n}
    return StageResult("cross_check", round_idx, {"cross_checks": version}, len(rows), metrics)


CROSS_CHECK = sharded_stage("cross-check", "cross-check-questions", cross_check_rows, merge_cross_checks,
                            counted="cross_checks", folder="cross_check")
