"""Solve stage: N Solver answers per selected question under N framings and a sampler ladder,
then the self-consistency vote and difficulty bucket of each question.

Writes `answers` (one row per sample, with its first-token entropies) and `votes` (majority,
majority fraction m, answer entropy H_SC, margin M, adaptive easy threshold, bucket).
"""

from __future__ import annotations

from prefect import task
from tqdm.auto import tqdm

from models.protocol import SolveRequest
from storage.settings import Settings
from storage.tables import connect, read, upsert
from tasks.logic.answers import normalize_answer
from tasks.logic.buckets import THETA_WINDOW, assign_buckets
from tasks.logic.sampling_plan import framing_for, sampler_ladder
from tasks.logic.ste import raw_ste
from tasks.logic.voting import vote
from tasks.round_inputs import backbone_for, images_by_id
from tasks.stage_result import StageResult


def entropy_history(db, round_idx: int) -> list[float]:
    """Answer entropies of earlier rounds, oldest first (persisted theta_easy history)."""
    frame = read(db, "votes", where=f"round_idx < {round_idx}", columns=["question_id", "round_idx", "answer_entropy"])
    return frame.sort_values(["round_idx", "question_id"])["answer_entropy"].tolist()[-THETA_WINDOW:]


@task(name="solve-and-vote")
def solve_and_vote(round_idx: int, checkpoint_uri: str, n_samples: int = 7, seed: int = 0,
                   chunk_questions: int = 512) -> StageResult:
    settings = Settings.from_env()
    db = connect(settings)
    backbone = backbone_for(checkpoint_uri, settings)
    questions = read(db, "questions", where=f"round_idx = {round_idx} AND selected = true",
                     columns=["question_id", "image_id", "question", "validator_a", "validator_b"])
    questions = questions.sort_values("question_id").reset_index(drop=True)
    ladder = sampler_ladder(n_samples)
    answer_rows, vote_rows = [], []
    bar = tqdm(total=len(questions), desc="solve", unit="q")
    for start in range(0, len(questions), chunk_questions):
        chunk = questions.iloc[start:start + chunk_questions]
        images = images_by_id(db, "images", "image_id", chunk["image_id"].tolist())
        requests = [SolveRequest(img, q, framing_for(i), t, p)
                    for img, q in zip(images, chunk["question"]) for i, (t, p) in enumerate(ladder)]
        results = backbone.solve(requests, seed=seed * 1000 + round_idx * 7919 + start)
        for j, qid in enumerate(chunk["question_id"]):
            samples = results[j * n_samples:(j + 1) * n_samples]
            normalized = [normalize_answer(r.text) for r in samples]
            for i, (r, norm) in enumerate(zip(samples, normalized)):
                t, p = ladder[i]
                answer_rows.append({"answer_id": f"{qid}:s{i}", "question_id": qid, "round_idx": round_idx,
                                    "sample_idx": i, "framing": framing_for(i), "temperature": t, "top_p": p,
                                    "text": r.text, "normalized": norm, "token_entropies": list(r.token_entropies)})
            v = vote(normalized)
            vote_rows.append({"question_id": qid, "round_idx": round_idx, "n_samples": n_samples,
                              "majority": v.majority, "majority_fraction": v.fraction, "answer_entropy": v.entropy,
                              "margin": v.margin,
                              "sample_ste_mean": sum(raw_ste(r.token_entropies) for r in samples) / n_samples})
        bar.update(len(chunk))
    bar.close()
    buckets = assign_buckets([(r["answer_entropy"], r["majority_fraction"], r["margin"]) for r in vote_rows],
                             entropy_history(db, round_idx))
    for row, (name, theta) in zip(vote_rows, buckets):
        row.update(bucket=name, theta_easy=theta)
    where = f"round_idx = {round_idx}"
    versions = {"answers": upsert(db, "answers", answer_rows, replace_where=where),
                "votes": upsert(db, "votes", vote_rows, replace_where=where)}
    n = max(1, len(vote_rows))
    metrics = {"questions_solved": len(vote_rows), "answers": len(answer_rows),
               "mean_majority_fraction": sum(r["majority_fraction"] for r in vote_rows) / n,
               "mean_answer_entropy": sum(r["answer_entropy"] for r in vote_rows) / n,
               **{f"bucket_{b}": sum(r["bucket"] == b for r in vote_rows) / n
                  for b in ("easy", "medium", "hard", "unsolvable")}}
    return StageResult("solve", round_idx, versions, len(answer_rows), metrics)
