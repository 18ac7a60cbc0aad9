"""Propose stage: K candidate questions per image, the greedy STE spot-check, and selection.

Every candidate is stored in `questions` with its parse, raw STE u (max full-vocabulary
entropy of the first answer tokens of one greedy Solver pass, taken from the decoding
logits), its difficulty d_STE (percentile over a rolling window continued from earlier
rounds' stored values) and whether it was selected for solving.

Sharded (tasks/sharded_stage.py runs `PROPOSE`): `propose_rows` reads one shard's images (any number of shards in
parallel, on any task runner) and makes their model calls a chunk at a time in `propose_chunk`, which works in
memory (benchmarks/round_overhead.py's bare loop calls it too); `select_questions` scores d_STE over every shard's
candidates in the round's image order, selects one candidate per image and upserts `questions`.
"""

from __future__ import annotations

import pyarrow as pa

from models.protocol import SolveRequest
from storage.arrow_rows import ArrowRows
from storage.settings import Settings
from storage.tables import connect, read, upsert
from tasks.logic.proposals import parse_question_proposal
from tasks.logic.selection import selected_candidates
from tasks.logic.shards import chunks, in_shard, item_seed
from tasks.logic.stage_configs import ProposeConfig
from tasks.logic.ste import STE_WINDOW, raw_ste, ste_difficulties
from tasks.round_inputs import backbone_for, images_by_id, round_image_ids
from tasks.sharded_stage import StagedRows, sharded_stage
from tasks.stage_result import StageResult
from tasks.logic.stage_seeds import stage_seed


def ste_history(db, round_idx: int) -> list[float]:
    """Raw STE values of earlier rounds, oldest first (the persisted rolling window)."""
    frame = read(db, "questions", where=f"round_idx < {round_idx}", columns=["question_id", "round_idx", "ste_raw"])
    frame = frame.sort_values(["round_idx", "question_id"])
    return frame["ste_raw"].tolist()[-STE_WINDOW:]


def propose_rows(settings: Settings, shard_idx: int, n_shards: int, round_idx: int, checkpoint_uri: str,
                 source: str, n_images: int, config: ProposeConfig = ProposeConfig(), seed: int = 0,
                 chunk_images: int = 1024, tables: dict[str, int] | None = None) -> dict[str, pa.Table]:
    """K candidates and their greedy spot-check for the round's images in shard `shard_idx`."""
    db = connect(settings, at=tables)
    order = {image_id: i for i, image_id in enumerate(round_image_ids(db, source, n_images, round_idx, seed))}
    mine = in_shard(list(order), shard_idx, n_shards)
    rows = ArrowRows()
    backbone = backbone_for(checkpoint_uri, settings) if mine else None
    for chunk in chunks(mine, chunk_images):
        rows.extend(propose_chunk(backbone, list(chunk), images_by_id(db, "images", "image_id", list(chunk)), order,
                                  round_idx, config, seed))
    return {"questions": rows.table()}


def propose_chunk(backbone, image_ids: list[str], images: list, order: dict[str, int], round_idx: int,
                  config: ProposeConfig, seed: int) -> list[dict]:
    """The model calls of a chunk of images, in memory: K candidates each and the greedy Solver pass whose first
    tokens' entropy is raw STE (the stage's rows, before d_STE and selection)."""
    raw = backbone.propose_questions(images, config.n_candidates, config.temperature,
                                     seed=[item_seed(stage_seed("propose", seed, round_idx), i) for i in image_ids])
    requests, part = [], []
    for image_id, image, texts in zip(image_ids, images, raw):
        for k, text in enumerate(texts):
            parsed = parse_question_proposal(text)
            part.append({"question_id": f"r{round_idx}:{image_id}:k{k}", "round_idx": round_idx,
                         "image_id": image_id, "candidate_idx": k, "raw_text": text, "question": parsed.question,
                         "validator_a": (parsed.validators + ("", ""))[0],
                         "validator_b": (parsed.validators + ("", ""))[1], "well_formed": parsed.well_formed,
                         "reject_reason": parsed.reject_reason, "image_order": order[image_id]})
            requests.append(SolveRequest(image, parsed.question, "canonical", temperature=0.0))
    for row, result in zip(part, backbone.solve(requests, seed=seed)):
        row.update(greedy_answer=result.text, ste_raw=raw_ste(result.token_entropies, aggregate=config.ste_aggregate))
    return part


def select_questions(settings: Settings, staged: StagedRows, round_idx: int,
                     config: ProposeConfig = ProposeConfig(), tables: dict[str, int] | None = None) -> StageResult:
    """Every shard's candidates: d_STE in the round's image order, one selected candidate per image.

    use_ste False is the "STE off" ablation: every candidate gets d_STE 0.5 and the first
    well-formed one is selected.
    """
    db = connect(settings, at=tables)
    data = staged.table("questions", sort_by=["image_order", "candidate_idx"])  # columns, not a dict per row
    n = data.num_rows
    us = data["ste_raw"].to_pylist() if n else []
    well_formed = data["well_formed"].to_pylist() if n else []
    difficulties = ste_difficulties(us, ste_history(db, round_idx)) if config.use_ste else [0.5] * n
    selected = selected_candidates(us, well_formed, difficulties, config.n_candidates, config.use_ste)
    if n:
        data = data.drop_columns(["image_order"])
        data = data.append_column("ste_difficulty", pa.array(difficulties, pa.float64()))
        data = data.append_column("selected", pa.array(selected, pa.bool_()))
    version = upsert(db, "questions", data, replace_where=f"round_idx = {round_idx}")
    chosen = [i for i in range(n) if selected[i]]
    texts = data["question"].to_pylist() if n else []
    metrics = {
        "candidates": n, "selected": len(chosen),
        "well_formed_share": sum(well_formed) / max(1, n),
        "distinct_questions": len({texts[i] for i in chosen}),
        "ste_mean": sum(us) / max(1, n),
        "ste_selected_mean": sum(us[i] for i in chosen) / max(1, len(chosen)),
    }
    return StageResult("propose", round_idx, {"questions": version}, n, metrics)


PROPOSE = sharded_stage("propose", "propose-questions", propose_rows, select_questions, counted="questions")
