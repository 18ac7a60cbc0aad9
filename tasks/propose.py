"""Propose stage: K candidate questions per image, the greedy STE spot-check, and selection.

Every candidate is stored in `questions` with its parse, raw STE u (max full-vocabulary
entropy of the first answer tokens of one greedy Solver pass, taken from the decoding
logits), its difficulty d_STE (percentile over a rolling window continued from earlier
rounds' stored values) and whether it was selected for solving.
"""

from __future__ import annotations

from models.protocol import SolveRequest
from storage.settings import Settings
from storage.tables import connect, read, upsert
from tasks.logic.proposals import parse_question_proposal
from tasks.logic.selection import pick_candidate
from tasks.logic.ste import STE_WINDOW, raw_ste, ste_difficulties
from tasks.round_inputs import backbone_for, round_images
from tasks.stage import stage_task
from tasks.stage_result import StageResult


def ste_history(db, round_idx: int) -> list[float]:
    """Raw STE values of earlier rounds, oldest first (the persisted rolling window)."""
    frame = read(db, "questions", where=f"round_idx < {round_idx}", columns=["question_id", "round_idx", "ste_raw"])
    frame = frame.sort_values(["round_idx", "question_id"])
    return frame["ste_raw"].tolist()[-STE_WINDOW:]


@stage_task("propose", "propose-questions")
def propose_questions(round_idx: int, checkpoint_uri: str, source: str, n_images: int, n_candidates: int = 3,
                      temperature: float = 1.0, seed: int = 0, use_ste: bool = True,
                      ste_aggregate: str = "max") -> StageResult:
    """use_ste False is the "STE off" ablation: every candidate gets d_STE 0.5 and the first
    well-formed one is selected."""
    settings = Settings.from_env()
    db = connect(settings)
    backbone = backbone_for(checkpoint_uri, settings)
    image_ids, images = round_images(db, source, n_images, round_idx, seed)
    raw = backbone.propose_questions(images, n_candidates, temperature, seed=seed * 1000 + round_idx)
    rows, requests = [], []
    for image_id, image, texts in zip(image_ids, images, raw):
        for k, text in enumerate(texts):
            parsed = parse_question_proposal(text)
            rows.append({"question_id": f"r{round_idx}:{image_id}:k{k}", "round_idx": round_idx,
                         "image_id": image_id, "candidate_idx": k, "raw_text": text, "question": parsed.question,
                         "validator_a": (parsed.validators + ("", ""))[0],
                         "validator_b": (parsed.validators + ("", ""))[1], "well_formed": parsed.well_formed,
                         "reject_reason": parsed.reject_reason})
            requests.append(SolveRequest(image, parsed.question, "canonical", temperature=0.0))
    spot = backbone.solve(requests, seed=seed)
    us = [raw_ste(r.token_entropies, aggregate=ste_aggregate) for r in spot]
    difficulties = ste_difficulties(us, ste_history(db, round_idx)) if use_ste else [0.5] * len(us)
    for row, result, u, d in zip(rows, spot, us, difficulties):
        row.update(greedy_answer=result.text, ste_raw=u, ste_difficulty=d, selected=False)
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
