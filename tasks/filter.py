"""Filter stage: decide what trains which role, record why for every item, store the examples.

Two presets:
- "paper" (faithful to METHOD.md): Solver REINFORCE examples are all N answers of medium/hard
  questions with advantage r~_i - b (EMA baseline carried across rounds); Proposer examples are the
  well-formed candidates of each image with bucket-wise EMA-shifted, max-normalised R_P; Generator
  examples are the L images of each spec with Q_spec >= 0.35, advantage = group z-score of R_g.
- "verified" (this project's variant): weighted imitation of medium/hard majority answers, of
  questions by STE difficulty, and of Solver-verified generated images, whose checks also become
  Solver examples.
`mode` "understanding" or "generation" keeps only that side (ablations).
"""

from __future__ import annotations

import json

import pandas as pd

from storage.slice_writer import SliceWriter
from storage.settings import Settings
from storage.tables import connect, read, upsert
from tasks.logic.advantages import bucket_shifted, ema_advantages, max_normalized
from models.vocabulary import FRAMINGS
from tasks.logic.filtering import (
    COMPOSE_JUDGED_KINDS,
    FilterConfig,
    check_label_decision,
    generation_decision,
    proposer_group_rewards,
    proposer_weight,
    question_decision,
    tile_generation_decisions,
)
from tasks.logic.generation_scores import group_zscores
from tasks.logic.label_sources import agreement_decision, question_kind
from tasks.logic.presets import recipe_of
from tasks.logic.shards import spec_chunks
from tasks.stage import stage_task
from tasks.stage_result import StageResult
from world.questions import question_family


CHUNK_ROWS = 2048  # rows turned into dicts at a time: the stage's memory follows the chunk, not the pool


def records(frame: pd.DataFrame, chunk: int = CHUNK_ROWS):
    """The frame's rows as dicts, `chunk` at a time (all of them never exist as dicts at once)."""
    for start in range(0, len(frame), chunk):
        yield from frame.iloc[start:start + chunk].to_dict("records")


def _example(round_idx, role, kind, source_id, image_table, image_key, prompt, target, weight, reward=0.0,
             advantage=0.0, framing="canonical"):
    return {"example_id": f"r{round_idx}:{role}:{kind}:{source_id}", "round_idx": round_idx, "role": role,
            "kind": kind, "source_id": source_id, "image_table": image_table, "image_key": image_key,
            "prompt": prompt, "target": target, "framing": framing, "weight": float(weight),
            "reward": float(reward), "advantage": float(advantage)}


class _Decisions(SliceWriter):
    """The round's filter decisions, written as they come, with the tallies the stage's metrics and QA rows need."""

    def __init__(self, db, where: str):
        super().__init__(db, "filter_decisions", where)
        self.kept: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.question_verdicts: dict[str, tuple[bool, str]] = {}

    def append(self, row: dict) -> None:
        kind = row["item_kind"]
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.kept[kind] = self.kept.get(kind, 0) + bool(row["kept"])
        if kind == "question":
            self.question_verdicts[row["item_id"]] = (row["kept"], row["reason"])
        super().append(row)


class _Examples(SliceWriter):
    """The round's training examples, written as they come, with each role's count and reward sums."""

    def __init__(self, db, where: str):
        super().__init__(db, "training_examples", where)
        self.by_role: dict[str, list[float]] = {}  # role -> [count, reward sum, advantage sum, |advantage| sum]

    def append(self, row: dict) -> None:
        tally = self.by_role.setdefault(row["role"], [0, 0.0, 0.0, 0.0])
        tally[0] += 1
        tally[1] += row["reward"]
        tally[2] += row["advantage"]
        tally[3] += abs(row["advantage"])
        super().append(row)


def _decision(round_idx, item_id, kind, kept, reason):
    return {"item_id": item_id, "round_idx": round_idx, "item_kind": kind, "kept": bool(kept), "reason": reason}


def previous_states(db, round_idx: int) -> dict[str, float]:
    """EMA baselines and betas stored by the latest earlier round."""
    frame = read(db, "role_states", where=f"round_idx < {round_idx}")
    if frame.empty:
        return {}
    latest = frame[frame["round_idx"] == frame["round_idx"].max()]
    return dict(zip(latest["name"], latest["value"]))


def _paper_understanding(round_idx, items, candidates, answers, states, decisions, examples):
    solver_rows = []
    for item in items:
        kept, reason = question_decision(item, FilterConfig(min_majority_fraction=0.0))
        decisions.append(_decision(round_idx, item["question_id"], "question", kept, reason))
        if kept:
            solver_rows.extend(answers.get(item["question_id"], []))
    advantages, baseline = ema_advantages([a["shaped_reward"] for a in solver_rows], states.get("solver_baseline", 0.0))
    for a, adv in zip(solver_rows, advantages):
        examples.append(_example(round_idx, "solver", "vqa", a["answer_id"], "images", a["image_id"], a["question"],
                                 a["mapped"], adv, a["shaped_reward"], adv, a["framing"]))
    new_states = {"solver_baseline": baseline}
    bucket_baselines = {k.split(":", 1)[1]: v for k, v in states.items() if k.startswith("proposer_baseline:")}
    for image_id in sorted(candidates):
        group = [c for c in candidates[image_id] if c["well_formed"]]
        if not group:
            continue
        rewards, buckets = zip(*proposer_group_rewards(group))
        shifted, bucket_baselines = bucket_shifted(rewards, buckets, bucket_baselines)
        for c, r, adv in zip(group, rewards, max_normalized(shifted)):
            examples.append(_example(round_idx, "proposer", "ask", c["question_id"], "images", image_id, "",
                                     c["raw_text"], adv, r, adv))
    new_states.update({f"proposer_baseline:{b}": v for b, v in bucket_baselines.items()})
    return new_states


def _paper_generation(round_idx, scores, specs, policy, decisions, examples):
    for spec_id, group in scores.groupby("spec_id", sort=True):
        q_spec = float(specs[spec_id]["q_spec"])
        advantages = group_zscores(group["reward"].tolist())
        spread = any(a != 0 for a in advantages)
        for row, adv in zip(group.to_dict("records"), advantages):
            kept = q_spec >= policy.min_q_spec and spread
            reason = "weak-spec" if q_spec < policy.min_q_spec else ("grpo-group" if spread else "no-reward-spread")
            decisions.append(_decision(round_idx, row["generation_id"], "generation", kept, reason))
            if kept:
                examples.append(_example(round_idx, "generator", "t2i", row["generation_id"], "generations",
                                         row["generation_id"], specs[spec_id]["prompt"], "", adv, row["reward"], adv))


def _imitate_majority(round_idx, item, kept, reason, decisions, examples):
    """Record the decision; a kept item's majority label teaches the Solver, its question the Proposer
    (weighted by STE difficulty, whether or not the Solver keeps it)."""
    decisions.append(_decision(round_idx, item["question_id"], "question", kept, reason))
    if kept:
        examples.append(_example(round_idx, "solver", "vqa", item["question_id"], "images", item["image_id"],
                                 item["question"], item["majority"], item["majority_fraction"]))
    weight = proposer_weight(item)
    if weight > 0:
        examples.append(_example(round_idx, "proposer", "ask", item["question_id"], "images", item["image_id"],
                                 "", item["raw_text"], weight, item["proposer_reward"]))


def _verified_understanding(round_idx, items, policy, decisions, examples):
    for item in items:
        kept, reason = question_decision(item, policy)
        _imitate_majority(round_idx, item, kept, reason, decisions, examples)


def _verified_generation(round_idx, scores, specs, policy, decisions, examples, judged_kinds=None):
    """Imitate the best Solver-accepted image of each spec. With `judged_kinds`, only specs whose every check is of
    a kind the Solver can judge (from the check's text): the compose preset leaves out relation checks, which
    the Solver answers at chance, so an accepted position image is no more often right than any sample."""
    best = set(scores.loc[scores.groupby("spec_id")["reward"].idxmax(), "generation_id"]) if len(scores) else set()
    for row in records(scores):
        kept, reason = generation_decision(row["reward"], row["generation_id"] in best, row["q_spec"], policy)
        spec = specs[row["spec_id"]]
        if kept and judged_kinds is not None and any(question_kind(q) not in judged_kinds
                                                     for q, _ in json.loads(spec["checks_json"])):
            kept, reason = False, "check-not-judged"
        decisions.append(_decision(round_idx, row["generation_id"], "generation", kept, reason))
        gid = row["generation_id"]
        if kept:
            examples.append(_example(round_idx, "generator", "t2i", gid, "generations", gid, spec["prompt"], "",
                                     row["reward"], row["reward"]))
            if spec["image_id"]:  # a targeted spec has no source image: the Proposer did not write it
                examples.append(_example(round_idx, "proposer", "spec", row["spec_id"], "images", spec["image_id"],
                                         "", spec["raw_text"], row["reward"], row["reward"]))
        if not check_label_decision(row["reward"], row["contradiction"], row["q_spec"], policy):
            continue
        for c, (question, expected) in enumerate(json.loads(spec["checks_json"])):
            examples.append(_example(round_idx, "solver", "vqa", f"{gid}:c{c}", "generations", gid, question,
                                     expected, row["reward"], row["reward"]))


def _tile_verified_generation(round_idx, scores, specs, verdicts, policy, decisions, examples, corrections=()):
    """The compose preset: imitate the best image of each spec that its tiles show to match the prompt (read with
    the Solver's tile names, `tile_verdicts`), or where no sample matches, its tile-corrected sample
    (`tile_corrections`, when the round made them). Images whose prompt is outside the prompt grammar (some of
    the Proposer's) fall back to the Solver's checks of the kinds it can judge."""
    undecided: set[str] = set()
    matched: set[str] = set()
    for part in spec_chunks(scores, CHUNK_ROWS):  # decisions are per spec, so a chunk of whole specs decides alone
        rows = [{**r, "verdict": verdicts.get(r["generation_id"], "not-in-grammar")} for r in part.to_dict("records")]
        decided = tile_generation_decisions(rows, policy)
        for row in rows:
            gid = row["generation_id"]
            if gid not in decided:
                undecided.add(gid)
                continue
            kept, reason = decided[gid]
            decisions.append(_decision(round_idx, gid, "generation", kept, reason))
            if kept:
                matched.add(row["spec_id"])
                spec = specs[row["spec_id"]]
                examples.append(_example(round_idx, "generator", "t2i", gid, "generations", gid, spec["prompt"], "",
                                         1.0, row["reward"]))
                if spec["image_id"]:  # a targeted spec has no source image: the Proposer did not write it
                    examples.append(_example(round_idx, "proposer", "spec", row["spec_id"], "images",
                                             spec["image_id"], "", spec["raw_text"], row["reward"], row["reward"]))
    for fix in corrections:
        if fix["spec_id"] in matched:
            continue
        spec = specs[fix["spec_id"]]
        kept = spec["q_spec"] >= policy.min_q_spec
        decisions.append(_decision(round_idx, fix["correction_id"], "correction", kept,
                                   "tile-corrected" if kept else "weak-spec"))
        if kept:
            examples.append(_example(round_idx, "generator", "t2i", fix["correction_id"], "tile_corrections",
                                     fix["correction_id"], spec["prompt"], "", 1.0, 0.0))
    rest = scores[scores["generation_id"].isin(undecided)].reset_index(drop=True)
    _verified_generation(round_idx, rest, specs, policy, decisions, examples, COMPOSE_JUDGED_KINDS)


def _agreement_understanding(round_idx, items, checks, decisions, examples):
    """Imitate a majority label only where the views its question kind needs agree with it (any bucket)."""
    for item in items:
        check = checks.get(item["question_id"], {})
        if not item["well_formed"]:
            kept, reason = False, "malformed"
        elif item["bucket"] == "unsolvable":
            kept, reason = False, "unsolvable"
        else:
            kept, reason = agreement_decision(question_kind(item["question"]), item["majority"],
                                              check.get("flip_answer"), check.get("caption_view_answer"))
        _imitate_majority(round_idx, item, kept, reason, decisions, examples)


def _composed_understanding(round_idx, items, labelled, decisions, examples, reason="composed",
                            majority_reason="compose-preset"):
    """The compose preset: the Solver learns the recomposed scenes' labels (known by construction from its own
    tile names) and their captions; the Proposer still imitates its own questions by STE difficulty, and no
    majority label of a pool image trains the Solver. `labelled` yields (composition id, [(question, label)],
    caption); the compose-gold ceiling passes the same scenes with the world's true labels and its own reasons."""
    for item in items:
        _imitate_majority(round_idx, item, False, majority_reason, decisions, examples)
    for cid, pairs, caption in labelled:
        for k, (question, label) in enumerate(pairs):
            examples.append(_example(round_idx, "solver", "vqa", f"{cid}:q{k}", "compositions", cid, question, label,
                                     1.0, 1.0, framing=FRAMINGS[(k + len(cid)) % len(FRAMINGS)]))
        examples.append(_example(round_idx, "solver", "caption", cid, "compositions", cid, "", caption, 1.0, 1.0))
        decisions.append(_decision(round_idx, cid, "composition", True, reason))


def _gold_understanding(round_idx, items, truths, decisions, examples):
    """The gold-label ceiling (not a method): every well-posed selected question with its true answer."""
    for item in items:
        truth = truths.get(item["question_id"])
        kept = item["well_formed"] and truth is not None
        decisions.append(_decision(round_idx, item["question_id"], "question", kept,
                                   "gold-label" if kept else "ill-posed"))
        if kept:
            examples.append(_example(round_idx, "solver", "vqa", item["question_id"], "images", item["image_id"],
                                     item["question"], truth, 1.0))


def _gold_generation(round_idx, scores, specs, correct, decisions, examples):
    """The gold-label ceiling: the first truly correct image of each spec (world parser) is imitated."""
    taken = set()
    for row in scores.to_dict("records"):
        spec_id, gid = row["spec_id"], row["generation_id"]
        kept = bool(correct.get(gid)) and spec_id not in taken
        decisions.append(_decision(round_idx, gid, "generation", kept, "gold-correct" if kept else "gold-rejected"))
        if kept:
            taken.add(spec_id)
            examples.append(_example(round_idx, "generator", "t2i", gid, "generations", gid,
                                     specs[spec_id]["prompt"], "", 1.0, 1.0))


def qa_item_rows(round_idx: int, items: list[dict], answers: pd.DataFrame, verdicts: dict[str, tuple[bool, str]],
                 chunk: int = CHUNK_ROWS):
    """One row per selected question with every signal and the filter's decision (`verdicts`: question id -> (kept,
    reason)); the dashboard's table, made `chunk` questions at a time (only their answers become dicts)."""
    answers = answers.sort_values(["question_id", "sample_idx"])
    for start in range(0, len(items), chunk):
        part = items[start:start + chunk]
        by_question: dict[str, list[dict]] = {}
        for a in answers[answers["question_id"].isin({i["question_id"] for i in part})].to_dict("records"):
            by_question.setdefault(a["question_id"], []).append(a)
        for item in part:
            own = by_question.get(item["question_id"], [])
            kept, reason = verdicts.get(item["question_id"], (False, "not-decided"))
            yield {
                "question_id": item["question_id"], "round_idx": round_idx, "image_id": item["image_id"],
                "question": item["question"], "family": question_family(item["question"]) or "other",
                "validator_a": item["validator_a"], "validator_b": item["validator_b"], "majority": item["majority"],
                "majority_fraction": item["majority_fraction"], "answer_entropy": item["answer_entropy"],
                "ste_raw": item["ste_raw"], "ste_difficulty": item["ste_difficulty"],
                "theta_easy": item["theta_easy"], "bucket": item["bucket"], "informativeness": item["informativeness"],
                "proposer_reward": item["proposer_reward"],
                "mean_solver_reward": sum(a["reward"] for a in own) / len(own) if own else 0.0,
                "kept": bool(kept), "reason": reason,
                "answers_json": json.dumps([{"framing": a["framing"], "temperature": a["temperature"],
                                             "text": a["text"], "mapped": a["mapped"], "reward": a["reward"]}
                                            for a in own])}


@stage_task("filter", "filter-examples")
def filter_examples(round_idx: int, preset: str = "paper", mode: str = "joint", policy: FilterConfig = FilterConfig(),
                    tables: dict[str, int] | None = None, namespace: str = "") -> StageResult:
    """The round's training examples and a decision with its reason for every item, by the preset's recipe and the
    filter section of the round's config (`policy`)."""
    recipe = recipe_of(preset)
    db = connect(Settings.from_env().within(namespace), at=tables)
    where = f"round_idx = {round_idx}"
    decisions, examples = _Decisions(db, where), _Examples(db, where)
    states: dict[str, float] = previous_states(db, round_idx)
    qa_rows = SliceWriter(db, "qa_items", where)
    new_states: dict[str, float] = {}
    if mode in ("joint", "understanding"):
        # Only the paper recipe reads every candidate (its Proposer learns from them all); the others read the
        # selected questions and the rejected candidates' reasons, not the whole table.
        questions = read(db, "questions", where=where) if recipe.solver_labels == "policy" else None
        selected = (questions[questions["selected"]] if questions is not None else
                    read(db, "questions", where=f"{where} AND selected = true"))
        rejected = (questions[~questions["well_formed"]] if questions is not None else
                    read(db, "questions", where=f"{where} AND well_formed = false",
                         columns=["question_id", "reject_reason"]))
        votes = read(db, "votes", where=where)
        items = selected.merge(votes, on=["question_id", "round_idx"], how="inner")
        items = items.sort_values("question_id").to_dict("records")
        del selected
        for q in rejected.sort_values("question_id").to_dict("records"):
            decisions.append(_decision(round_idx, q["question_id"], "candidate", False, q["reject_reason"]))
        del rejected
        answers = read(db, "answers", where=where, columns=None if recipe.solver_labels == "policy" else
                       ["answer_id", "question_id", "sample_idx", "framing", "temperature", "text", "mapped", "reward"])
        if recipe.solver_labels == "policy":
            image_of = dict(zip(questions["question_id"], questions["image_id"]))
            text_of = dict(zip(questions["question_id"], questions["question"]))
            by_question: dict[str, list[dict]] = {}
            for a in answers.sort_values("answer_id").to_dict("records"):
                a.update(image_id=image_of[a["question_id"]], question=text_of[a["question_id"]])
                by_question.setdefault(a["question_id"], []).append(a)
            cands = questions.merge(votes[["question_id", "proposer_reward", "bucket"]], on="question_id", how="left")
            by_image: dict[str, list[dict]] = {}
            for c in cands.sort_values("question_id").to_dict("records"):
                c["proposer_reward"] = None if c["proposer_reward"] != c["proposer_reward"] else c["proposer_reward"]
                by_image.setdefault(c["image_id"], []).append(c)
            new_states = _paper_understanding(round_idx, items, by_image, by_question, states, decisions, examples)
        elif recipe.solver_labels == "agreement":
            checks = read(db, "cross_checks", where=where).set_index("question_id").to_dict("index")
            _agreement_understanding(round_idx, items, checks, decisions, examples)
        elif recipe.solver_labels == "composed":
            compositions = read(db, "compositions", where=where, columns=["composition_id", "questions_json",
                                                                          "caption"])
            labelled = ((row["composition_id"], [(q, label) for q, label, _ in json.loads(row["questions_json"])],
                         row["caption"]) for row in records(compositions.sort_values("composition_id")))
            _composed_understanding(round_idx, items, labelled, decisions, examples)
        elif recipe.solver_labels == "composed-gold":
            from tasks.gold_labels import composed_true_labels

            compositions = read(db, "compositions", where=where, columns=["composition_id", "image_id",
                                                                          "placement_json", "questions_json"])
            truths = composed_true_labels(db, compositions)
            _composed_understanding(round_idx, items, ((cid, *truths[cid]) for cid in sorted(truths)), decisions,
                                    examples, reason="gold-label", majority_reason="compose-gold-ceiling")
        elif recipe.solver_labels == "gold":
            from tasks.gold_labels import true_answers

            _gold_understanding(round_idx, items, true_answers(db, items), decisions, examples)
        else:
            _verified_understanding(round_idx, items, policy, decisions, examples)
        for row in qa_item_rows(round_idx, items, answers, decisions.question_verdicts):
            qa_rows.append(row)
        del answers
    if mode in ("joint", "generation"):
        scores = read(db, "scores", where=where).sort_values("generation_id").reset_index(drop=True)
        specs = read(db, "specs", where=where).set_index("spec_id").to_dict("index")
        if recipe.generator_labels == "policy":
            _paper_generation(round_idx, scores, specs, policy, decisions, examples)
        elif recipe.generator_labels == "gold":
            from tasks.gold_labels import correct_generations

            _gold_generation(round_idx, scores, specs, correct_generations(db, round_idx), decisions, examples)
        else:
            # Only the verified preset turns accepted images' checks into Solver labels (GenEval-grammar scenes are
            # simpler than real ones: measured to hurt counting).
            if not recipe.checks_teach_solver:
                policy = policy.model_copy(update={"check_label_reward": float("inf")})
            if recipe.generator_labels == "tile-verified":
                verdicts = read(db, "tile_verdicts", where=where, columns=["generation_id", "verdict"])
                fixes = read(db, "tile_corrections", where=where, columns=["correction_id", "spec_id"])
                _tile_verified_generation(round_idx, scores, specs, dict(zip(verdicts["generation_id"],
                                                                             verdicts["verdict"])),
                                          policy, decisions, examples,
                                          fixes.sort_values("correction_id").to_dict("records"))
            else:
                _verified_generation(round_idx, scores, specs, policy, decisions, examples)
    # Baselines roll forward round to round; the fine-tune stage owns the "beta:" rows.
    carried = {k: v for k, v in {**states, **new_states}.items() if not k.startswith("beta:")}
    state_rows = [{"state_id": f"r{round_idx}:{k}", "round_idx": round_idx, "name": k, "value": v}
                  for k, v in sorted(carried.items())]
    versions = {"filter_decisions": decisions.close(), "training_examples": examples.close(),
                "qa_items": qa_rows.close(),
                "role_states": upsert(db, "role_states", state_rows,
                                      replace_where=f"{where} AND NOT (name LIKE 'beta:%')")}
    metrics = {"questions_kept": decisions.kept.get("question", 0),
               "compositions_kept": decisions.kept.get("composition", 0),
               "generations_kept": decisions.kept.get("generation", 0),
               "corrections_kept": decisions.kept.get("correction", 0),
               "candidates_rejected": decisions.counts.get("candidate", 0),
               "examples": len(examples)}
    for role in ("proposer", "solver", "generator"):
        n, rewards, advantages, magnitudes = examples.by_role.get(role, [0, 0.0, 0.0, 0.0])
        metrics[f"examples_{role}"] = n
        if n:
            metrics[f"{role}_mean_reward"] = rewards / n
            metrics[f"{role}_mean_advantage"] = advantages / n
            metrics[f"{role}_advantage_abs_mean"] = magnitudes / n
    return StageResult("filter", round_idx, versions, len(examples), metrics)
