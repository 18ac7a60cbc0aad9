"""Filter stage: turn the round's votes and scores into weighted training examples per role.

Writes `filter_decisions` (every candidate item, kept or not, with its reason) and
`training_examples` (role, kind, the stored image it refers to, prompt, target, weight).
"""

from __future__ import annotations

import json

from prefect import task

from storage.settings import Settings
from storage.tables import connect, read, upsert
from tasks.logic.filtering import FilterPolicy, generation_decision, proposer_weight, question_decision
from tasks.stage_result import StageResult


def _example(round_idx, role, kind, source_id, image_table, image_key, prompt, target, weight):
    return {"example_id": f"r{round_idx}:{role}:{kind}:{source_id}", "round_idx": round_idx, "role": role,
            "kind": kind, "source_id": source_id, "image_table": image_table, "image_key": image_key,
            "prompt": prompt, "target": target, "weight": float(weight)}


@task(name="filter-examples")
def filter_examples(round_idx: int, min_majority_fraction: float = 0.4, accept_reward: float = 0.7) -> StageResult:
    policy = FilterPolicy(min_majority_fraction=min_majority_fraction, accept_reward=accept_reward)
    db = connect(Settings.from_env())
    where = f"round_idx = {round_idx}"
    questions = read(db, "questions", where=f"{where} AND selected = true")
    votes = read(db, "votes", where=where)
    items = questions.merge(votes, on=["question_id", "round_idx"], how="inner")
    decisions, examples = [], []
    for item in items.sort_values("question_id").to_dict("records"):
        kept, reason = question_decision(item, policy)
        decisions.append({"item_id": item["question_id"], "round_idx": round_idx, "item_kind": "question",
                          "kept": kept, "reason": reason})
        if kept:
            examples.append(_example(round_idx, "solver", "vqa", item["question_id"], "images", item["image_id"],
                                     item["question"], item["majority"], item["majority_fraction"]))
        weight = proposer_weight(item)
        if weight > 0:
            examples.append(_example(round_idx, "proposer", "ask", item["question_id"], "images", item["image_id"],
                                     "", item["raw_text"], weight))
    scores = read(db, "scores", where=where).sort_values("generation_id")
    specs = read(db, "specs", where=where).set_index("spec_id")
    best = scores.loc[scores.groupby("spec_id")["reward"].idxmax(), "generation_id"].tolist() if len(scores) else []
    for row in scores.to_dict("records"):
        kept, reason = generation_decision(row["reward"], row["generation_id"] in best, row["q_spec"], policy)
        decisions.append({"item_id": row["generation_id"], "round_idx": round_idx, "item_kind": "generation",
                          "kept": kept, "reason": reason})
        if not kept:
            continue
        spec = specs.loc[row["spec_id"]]
        gid = row["generation_id"]
        examples.append(_example(round_idx, "generator", "t2i", gid, "generations", gid, spec["prompt"], "",
                                 row["reward"]))
        examples.append(_example(round_idx, "proposer", "spec", row["spec_id"], "images", spec["image_id"], "",
                                 spec["raw_text"], row["reward"]))
        for c, (question, expected) in enumerate(json.loads(spec["checks_json"])):
            examples.append(_example(round_idx, "solver", "vqa", f"{gid}:c{c}", "generations", gid, question,
                                     expected, row["reward"]))
    versions = {"filter_decisions": upsert(db, "filter_decisions", decisions, replace_where=where),
                "training_examples": upsert(db, "training_examples", examples, replace_where=where)}
    kept_q = [d for d in decisions if d["item_kind"] == "question" and d["kept"]]
    kept_g = [d for d in decisions if d["item_kind"] == "generation" and d["kept"]]
    metrics = {"questions_kept": len(kept_q), "generations_kept": len(kept_g), "examples": len(examples),
               **{f"examples_{role}": sum(e["role"] == role for e in examples)
                  for role in ("proposer", "solver", "generator")}}
    return StageResult("filter", round_idx, versions, len(examples), metrics)
