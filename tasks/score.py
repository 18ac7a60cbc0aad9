"""Score stage: the current Solver judges every generated image.

Per image: QA fidelity over the spec's checks (n Solver answers each), contradiction rate,
cycle consistency (caption it, compare with the prompt in the base model's own embedding
space, plus image-prompt similarity) and leave-one-out diversity within its spec's group;
R_g combines them. Writes `scores`.

Sharded by spec (a spec's L images stay together for the diversity term; tasks/sharded_stage.py runs
`SCORE`): `score_rows` scores one shard's images; `merge_scores` upserts every shard's rows.
The model calls of a chunk are `score_chunk`, in memory (benchmarks/round_overhead.py's bare loop calls it too).
"""

from __future__ import annotations

import json

import pyarrow as pa

from models.protocol import SolveRequest
from storage.arrow_rows import ArrowRows
from storage.settings import Settings
from storage.tables import connect, read, upsert
from tasks.logic.answers import normalize_answer
from tasks.logic.generation_scores import (
    check_fidelity,
    contradicts,
    cycle_consistency,
    generation_reward,
    leave_one_out_diversity,
)
from tasks.logic.sampling_plan import framing_for, sampler_ladder
from tasks.logic.shards import in_shard, item_seed, spec_chunks
from tasks.logic.stage_configs import ScoreConfig
from tasks.round_inputs import backbone_for, images_by_id
from tasks.sharded_stage import StagedRows, sharded_stage
from tasks.stage_result import StageResult
from tasks.logic.stage_seeds import stage_seed


def score_rows(settings: Settings, shard_idx: int, n_shards: int, round_idx: int, checkpoint_uri: str,
               config: ScoreConfig = ScoreConfig(), seed: int = 0, chunk_specs: int = 1024,
               tables: dict[str, int] | None = None) -> dict[str, pa.Table]:
    """The `scores` rows of one shard's images. use_fidelity / use_cycle False are the "QA fidelity off" /
    "cycle consistency off" ablations: the term is still measured and stored but left out of R_g."""
    db = connect(settings, at=tables)
    gens = read(db, "generations", where=f"round_idx = {round_idx}",
                columns=["generation_id", "spec_id", "sample_idx", "prompt"])
    specs = read(db, "specs", where=f"round_idx = {round_idx} AND valid = true",
                 columns=["spec_id", "checks_json", "q_spec"]).set_index("spec_id")
    gens = gens[gens["spec_id"].isin(set(in_shard(sorted(set(gens["spec_id"])), shard_idx, n_shards)))]
    backbone = backbone_for(checkpoint_uri, settings) if len(gens) else None
    rows = ArrowRows()
    for part in spec_chunks(gens, chunk_specs):
        part = part.sort_values("generation_id").reset_index(drop=True)
        images = images_by_id(db, "generations", "generation_id", part["generation_id"].tolist())
        rows.extend(score_chunk(backbone, images, round_idx, part, specs, config, seed))
    return {"scores": rows.table()}


def score_chunk(backbone, images: list, round_idx: int, gens, specs, config: ScoreConfig, seed: int) -> list[dict]:
    """The model calls of a chunk of generations (a frame with generation_id, spec_id and prompt, whole specs;
    `images` in its order; `specs` indexed by spec_id with checks_json and q_spec), in memory, and their scores."""
    ladder = sampler_ladder(config.n_answers)
    call_seed = stage_seed("score", seed, round_idx)
    requests, owners, seeds = [], [], []
    for g, (row, image) in enumerate(zip(gens.itertuples(), images)):
        for c, (question, _) in enumerate(json.loads(specs.loc[row.spec_id, "checks_json"])):
            for i, (t, p) in enumerate(ladder):
                requests.append(SolveRequest(image, question, framing_for(i), t, p))
                owners.append((g, c))
                seeds.append(item_seed(call_seed, f"{row.generation_id}:c{c}:s{i}"))
    results = backbone.solve(requests, seed=seeds)
    answers: dict[tuple[int, int], list[str]] = {}
    for owner, result in zip(owners, results):
        answers.setdefault(owner, []).append(normalize_answer(result.text))
    captions = backbone.caption(images)
    prompt_emb = backbone.embed_texts(gens["prompt"].tolist())
    caption_emb = backbone.embed_texts(captions)
    image_emb = backbone.embed_images(images)
    diversity = {}
    for spec_id, group in gens.groupby("spec_id"):
        idx = group.index.tolist()
        for i, d in zip(idx, leave_one_out_diversity([images[i] for i in idx])):
            diversity[i] = d
    rows = []
    for g, row in enumerate(gens.itertuples()):
        checks = json.loads(specs.loc[row.spec_id, "checks_json"])
        per_check = [answers[(g, c)] for c in range(len(checks))]
        fidelity = sum(check_fidelity(a, exp) for a, (_, exp) in zip(per_check, checks)) / len(checks)
        contradiction = sum(contradicts(a, exp) for a, (_, exp) in zip(per_check, checks)) / len(checks)
        cycle = cycle_consistency(prompt_emb[g], caption_emb[g], image_emb[g])
        q_spec = float(specs.loc[row.spec_id, "q_spec"])
        rows.append({"generation_id": row.generation_id, "spec_id": row.spec_id, "round_idx": round_idx,
                     "fidelity": fidelity, "cycle": cycle, "diversity": diversity[g], "contradiction": contradiction,
                     "q_spec": q_spec,
                     "reward": generation_reward(q_spec, fidelity, cycle, diversity[g], contradiction,
                                                 config.use_fidelity, config.use_cycle),
                     "caption": captions[g], "check_answers_json": json.dumps(per_check)})
    return rows


def merge_scores(settings: Settings, staged: StagedRows, round_idx: int,
                 tables: dict[str, int] | None = None) -> StageResult:
    """Every shard's rows into `scores`."""
    db = connect(settings, at=tables)
    rows = staged.table("scores", sort_by="generation_id")
    version = upsert(db, "scores", rows, replace_where=f"round_idx = {round_idx}")
    n = max(1, rows.num_rows)
    metrics = {"scored": rows.num_rows, **{f"mean_{k}": (sum(rows[k].to_pylist()) if rows.num_rows else 0) / n
                                           for k in ("fidelity", "cycle", "diversity", "contradiction", "reward")}}
    return StageResult("score", round_idx, {"scores": version}, rows.num_rows, metrics)


SCORE = sharded_stage("score", "score-generations", score_rows, merge_scores, counted="scores")
