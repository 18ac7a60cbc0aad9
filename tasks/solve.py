"""Solve stage: N Solver answers per selected question under N framings and a sampler ladder,
then the self-consistency vote and difficulty bucket of each question.

Answers are normalised and mapped onto the Proposer's hidden two-answer validator before voting.
Writes `answers` (one row per sample: framing, temperature, top-p, first-token entropies, whether it
is the majority, its share, the Solver reward r_i and shaped reward r~_i) and `votes` (majority,
majority fraction m, answer entropy H_SC, margin M, informativeness s, adaptive easy threshold,
bucket and the Proposer's reward R_P).

Sharded by question (tasks/sharded_stage.py runs `SOLVE`): `solve_rows` answers and votes on one shard's
questions (per-sample seeds keyed by answer id, so the split does not change a draw); `merge_votes` assigns
buckets with the round-wide adaptive threshold over every shard's votes and upserts both tables.
The model calls of a chunk are `solve_chunk`, in memory (benchmarks/round_overhead.py's bare loop calls it too).
"""

from __future__ import annotations

import pyarrow as pa
from tqdm.auto import tqdm

from models.protocol import SolveRequest
from storage.arrow_rows import ArrowRows
from storage.settings import Settings
from storage.tables import connect, read, upsert
from tasks.logic.answers import map_to_validators, normalize_answer
from tasks.logic.buckets import THETA_WINDOW, assign_buckets
from tasks.logic.rewards import (
    informativeness,
    proposer_reward,
    shaped_solver_reward,
    solver_reward,
)
from tasks.logic.sampling_plan import framing_for, sampler_ladder
from tasks.logic.shards import chunks, item_seed, shard_of
from tasks.logic.stage_configs import SolveConfig
from tasks.logic.ste import raw_ste
from tasks.logic.voting import vote
from tasks.round_inputs import backbone_for, images_by_id
from tasks.sharded_stage import StagedRows, sharded_stage
from tasks.stage_result import StageResult
from tasks.logic.stage_seeds import stage_seed


def entropy_history(db, round_idx: int) -> list[float]:
    """Answer entropies of earlier rounds, oldest first (persisted theta_easy history)."""
    frame = read(db, "votes", where=f"round_idx < {round_idx}", columns=["question_id", "round_idx", "answer_entropy"])
    return frame.sort_values(["round_idx", "question_id"])["answer_entropy"].tolist()[-THETA_WINDOW:]


def solve_rows(settings: Settings, shard_idx: int, n_shards: int, round_idx: int, checkpoint_uri: str,
               config: SolveConfig = SolveConfig(), seed: int = 0,
               chunk_questions: int = 1024, tables: dict[str, int] | None = None) -> dict[str, pa.Table]:
    """N answers and the vote of each selected question in shard `shard_idx`: {"answers": …, "votes": …}.

    use_framings False is the "prompt framings off" ablation: every sample uses the canonical
    framing (the temperature/top-p ladder stays)."""
    db = connect(settings, at=tables)
    questions = read(db, "questions", where=f"round_idx = {round_idx} AND selected = true",
                     columns=["question_id", "image_id", "question", "validator_a", "validator_b", "ste_difficulty"])
    questions = questions.sort_values("question_id").reset_index(drop=True)
    questions = questions[[shard_of(q, n_shards) == shard_idx for q in questions["question_id"]]]
    answer_rows, vote_rows = ArrowRows(), ArrowRows()
    backbone = backbone_for(checkpoint_uri, settings) if len(questions) else None
    bar = tqdm(total=len(questions), desc=f"solve shard {shard_idx}/{n_shards}", unit="q")
    for chunk in chunks(questions, chunk_questions):
        images = images_by_id(db, "images", "image_id", chunk["image_id"].tolist())
        answers, votes = solve_chunk(backbone, chunk, images, round_idx, config, seed)
        answer_rows.extend(answers)
        vote_rows.extend(votes)
        bar.update(len(chunk))
    bar.close()
    return {"answers": answer_rows.table(), "votes": vote_rows.table()}


def solve_chunk(backbone, questions, images: list, round_idx: int, config: SolveConfig, seed: int
                ) -> tuple[list[dict], list[dict]]:
    """The model calls of a chunk of selected questions (a frame with question_id, question, validators and
    ste_difficulty; `images` in its order), in memory: N answers each and the vote. Returns (answers, votes)."""
    n_samples, use_framings = config.n_samples, config.use_framings
    ladder = sampler_ladder(n_samples)
    call_seed = stage_seed("solve", seed, round_idx)
    requests = [SolveRequest(img, q, framing_for(i) if use_framings else "canonical", t, p)
                for img, q in zip(images, questions["question"]) for i, (t, p) in enumerate(ladder)]
    seeds = [item_seed(call_seed, f"{qid}:s{i}") for qid in questions["question_id"] for i in range(n_samples)]
    results = backbone.solve(requests, seed=seeds)
    answers, votes = [], []
    for j, row in enumerate(questions.itertuples()):
        samples = results[j * n_samples:(j + 1) * n_samples]
        validators = (row.validator_a, row.validator_b)
        mapped = [map_to_validators(r.text, validators) for r in samples]
        v = vote(mapped)
        s = informativeness(v.entropy, v.margin)
        for i, (r, answer) in enumerate(zip(samples, mapped)):
            t, p = ladder[i]
            reward = solver_reward(answer == v.majority, s)
            words_before = max(0, len(r.text.split()) - len(answer.split()))
            answers.append({
                "answer_id": f"{row.question_id}:s{i}", "question_id": row.question_id, "round_idx": round_idx,
                "sample_idx": i, "framing": requests[j * n_samples + i].framing, "temperature": t, "top_p": p,
                "text": r.text, "normalized": normalize_answer(r.text), "mapped": answer,
                "token_entropies": list(r.token_entropies), "is_majority": answer == v.majority,
                "answer_share": v.distribution[answer], "reward": reward,
                "shaped_reward": shaped_solver_reward(reward, v.distribution[answer], words_before)})
        votes.append({"question_id": row.question_id, "round_idx": round_idx, "n_samples": n_samples,
                      "majority": v.majority, "majority_fraction": v.fraction, "answer_entropy": v.entropy,
                      "margin": v.margin, "informativeness": s, "ste_difficulty": row.ste_difficulty,
                      "sample_ste_mean": sum(raw_ste(r.token_entropies) for r in samples) / n_samples})
    return answers, votes


def merge_votes(settings: Settings, staged: StagedRows, round_idx: int,
                tables: dict[str, int] | None = None) -> StageResult:
    """Every shard's answers and votes: buckets with the round-wide adaptive threshold, the Proposer's reward,
    upserts."""
    db = connect(settings, at=tables)
    vote_rows = staged.table("votes", sort_by="question_id").to_pylist()
    buckets = assign_buckets([(r["answer_entropy"], r["majority_fraction"], r["margin"]) for r in vote_rows],
                             entropy_history(db, round_idx))
    for row, (name, theta) in zip(vote_rows, buckets):
        d_ste = row.pop("ste_difficulty")
        row.update(bucket=name, theta_easy=theta, proposer_reward=proposer_reward(
            d_ste, row["answer_entropy"], row["informativeness"], easy=name == "easy"))
    answers = staged.table("answers", sort_by="answer_id")  # Arrow to the store: no dict per answer
    where = f"round_idx = {round_idx}"
    versions = {"answers": upsert(db, "answers", answers, replace_where=where),
                "votes": upsert(db, "votes", vote_rows, replace_where=where)}
    n = max(1, len(vote_rows))
    shaped = answers["shaped_reward"].to_pylist() if answers.num_rows else []
    metrics = {"questions_solved": len(vote_rows), "answers": answers.num_rows,
               "mean_majority_fraction": sum(r["majority_fraction"] for r in vote_rows) / n,
               "mean_answer_entropy": sum(r["answer_entropy"] for r in vote_rows) / n,
               "mean_proposer_reward": sum(r["proposer_reward"] for r in vote_rows) / n,
               "mean_solver_shaped_reward": sum(shaped) / max(1, len(shaped)),
               **{f"bucket_{b}": sum(r["bucket"] == b for r in vote_rows) / n
                  for b in ("easy", "medium", "hard", "unsolvable")}}
    return StageResult("solve", round_idx, versions, answers.num_rows, metrics)


SOLVE = sharded_stage("solve", "solve-and-vote", solve_rows, merge_votes, counted="answers")
