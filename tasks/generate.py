"""Generate stage: the Proposer writes a text-to-image spec per image, the Solver checks it against
the source image (the self-alignment gate, with retries), and the Generator draws L images per spec.

Writes `specs` (raw text, prompt, checks, Q_spec, attempts, alignment, the Solver's answers on the
source image, why it was accepted or not) and `generations` (a PNG per sample). Only accepted
specs are drawn.

Targeted specs (the compose preset, understanding -> generation): `targeted_specs` more prompts per round
aimed at categories the Generator gets wrong and the Solver can verify (colour attribution, counting, two objects),
each with the checks its words imply and `targeted_per_prompt` samples, so that correct images exist among
them; the score stage's Solver checks pick them (rejection sampling). They have no source image.

Sharded by source image (tasks/sharded_stage.py runs `GENERATE`): `generate_rows` writes, gates and draws the
specs of one shard's images (per-image and per-spec seeds); `merge_generations` upserts every shard's rows.
"""

from __future__ import annotations

import json
import random

import pyarrow as pa

from models.protocol import SolveRequest
from storage.image_files import encode_png
from storage.arrow_rows import ArrowRows
from storage.settings import Settings
from storage.tables import connect, upsert
from tasks.logic.alignment import MAX_RETRIES, alignment, best_attempt, spec_accepted
from tasks.logic.answers import normalize_answer
from tasks.logic.proposals import parse_spec
from tasks.logic.sampling_plan import framing_for, sampler_ladder
from tasks.logic.shards import chunks, in_shard, item_seed
from tasks.logic.stage_configs import GenerateConfig
from tasks.round_inputs import backbone_for, images_by_id, round_image_ids
from tasks.sharded_stage import StagedRows, sharded_stage
from tasks.stage_result import StageResult
from tasks.logic.stage_seeds import stage_seed
from world import language

SOURCE_CHECK_ANSWERS = 3


def targeted_spec_rows(round_idx: int, n_specs: int, seed: int,
                       categories: tuple[str, ...] = GenerateConfig().targeted_categories) -> list[dict]:
    """`n_specs` prompts cycling over `categories`, each written as a spec with its implied checks."""
    rng = random.Random(f"targeted:{seed}:{round_idx}")
    rows = []
    for k in range(n_specs):
        prompt = language.sample_prompt(rng, categories[k % len(categories)]).text
        raw = " | ".join([prompt] + [f"{q} = {a}" for q, a in language.checks_for_prompt(prompt)])
        spec = parse_spec(raw)
        rows.append({"spec_id": f"r{round_idx}:t{k}", "round_idx": round_idx, "image_id": "", "raw_text": raw,
                     "prompt": spec.prompt, "checks_json": json.dumps(spec.checks), "n_checks": len(spec.checks),
                     "q_spec": spec.quality, "attempts": 0, "alignment": 1.0, "source_answers_json": "[]",
                     "accept_reason": "targeted", "valid": True})
    return rows


def _drawn(backbone, round_idx, specs, n_per_prompt, temperature, seed) -> list[dict]:
    drawn = backbone.generate_images([r["prompt"] for r in specs], n_per_prompt, temperature,
                                     seed=[item_seed(stage_seed("generate", seed, round_idx), r["spec_id"]) for r in specs])
    return [{"generation_id": f"{spec['spec_id']}:g{l}", "spec_id": spec["spec_id"], "round_idx": round_idx,
             "sample_idx": l, "prompt": spec["prompt"], "png": encode_png(image)}
            for spec, group in zip(specs, drawn) for l, image in enumerate(group)]


def _attempt(backbone, image_ids, images, temperature: float, seed: int) -> list[dict]:
    """One spec per image with its Q_spec, the Solver's answers on the source image and the gate."""
    raw = backbone.propose_specs(images, temperature, seed=[item_seed(seed, i) for i in image_ids])
    specs = [parse_spec(text) for text in raw]
    ladder = sampler_ladder(SOURCE_CHECK_ANSWERS)
    requests, owners, seeds = [], [], []
    for k, (image_id, image, spec) in enumerate(zip(image_ids, images, specs)):
        for c, (question, _) in enumerate(spec.checks):
            for i, (t, p) in enumerate(ladder):
                requests.append(SolveRequest(image, question, framing_for(i), t, p))
                owners.append((k, c))
                seeds.append(item_seed(seed + 1, f"{image_id}:c{c}:s{i}"))
    answers: dict[tuple[int, int], list[str]] = {}
    for owner, result in zip(owners, backbone.solve(requests, seed=seeds)):
        answers.setdefault(owner, []).append(normalize_answer(result.text))
    out = []
    for k, (text, spec) in enumerate(zip(raw, specs)):
        per_check = [answers[(k, c)] for c in range(len(spec.checks))]
        align = alignment(per_check, [a for _, a in spec.checks])
        ok, reason = spec_accepted(len(spec.checks), spec.quality, align)
        if ok and not spec.prompt:
            ok, reason = False, "no-prompt"
        out.append({"raw_text": text, "spec": spec, "alignment": align, "answers": per_check, "ok": ok,
                    "reason": reason})
    return out


def generate_rows(settings: Settings, shard_idx: int, n_shards: int, round_idx: int, checkpoint_uri: str,
                  source: str, n_images: int, config: GenerateConfig = GenerateConfig(), seed: int = 0,
                  targeted_specs: int = 0, max_retries: int = MAX_RETRIES,
                  chunk_images: int = 1024, tables: dict[str, int] | None = None) -> dict[str, pa.Table]:
    """The specs of one shard's images (written, gated, retried) and their images, plus the shard's share of
    `targeted_specs` specs aimed at the weak categories, drawn best-of-`config.targeted_per_prompt`."""
    n_per_prompt, temperature, targeted_per_prompt = config.n_per_prompt, config.temperature, config.targeted_per_prompt
    db = connect(settings, at=tables)
    mine = in_shard(round_image_ids(db, source, n_images, round_idx, seed), shard_idx, n_shards)
    every_targeted = targeted_spec_rows(round_idx, targeted_specs, seed, config.targeted_categories)
    own = set(in_shard([r["spec_id"] for r in every_targeted], shard_idx, n_shards))
    targeted = [r for r in every_targeted if r["spec_id"] in own]
    backbone = backbone_for(checkpoint_uri, settings) if mine or targeted else None
    spec_rows, generation_rows = ArrowRows(), ArrowRows()
    for chunk in chunks(mine, chunk_images):
        specs, gens = _generate_chunk(backbone, round_idx, list(chunk), images_by_id(db, "images", "image_id",
                                      list(chunk)), n_per_prompt, temperature, seed, max_retries)
        spec_rows.extend(specs)
        generation_rows.extend(gens)
    for chunk in chunks(targeted, chunk_images):
        spec_rows.extend(list(chunk))
        generation_rows.extend(_drawn(backbone, round_idx, list(chunk), targeted_per_prompt, temperature, seed))
    return {"specs": spec_rows.table(), "generations": generation_rows.table()}


def _generate_chunk(backbone, round_idx, image_ids, images, n_per_prompt, temperature, seed, max_retries):
    attempts: list[list[dict]] = [[] for _ in images]
    pending = list(range(len(images)))
    for attempt in range(max_retries + 1):
        if not pending:
            break
        results = _attempt(backbone, [image_ids[k] for k in pending], [images[k] for k in pending], temperature,
                           seed=stage_seed("generate-spec", seed, round_idx, attempt=attempt))
        for k, result in zip(pending, results):
            attempts[k].append(result)
        pending = [k for k in pending if not attempts[k][-1]["ok"]]
    spec_rows = []
    for image_id, tries in zip(image_ids, attempts):
        best = tries[best_attempt([(t["ok"], t["spec"].quality, t["alignment"]) for t in tries])]
        spec = best["spec"]
        spec_rows.append({"spec_id": f"r{round_idx}:{image_id}", "round_idx": round_idx, "image_id": image_id,
                          "raw_text": best["raw_text"], "prompt": spec.prompt, "checks_json": json.dumps(spec.checks),
                          "n_checks": len(spec.checks), "q_spec": spec.quality, "attempts": len(tries),
                          "alignment": best["alignment"], "source_answers_json": json.dumps(best["answers"]),
                          "accept_reason": best["reason"], "valid": best["ok"]})
    accepted = [r for r in spec_rows if r["valid"]]
    return spec_rows, _drawn(backbone, round_idx, accepted, n_per_prompt, temperature, seed)


def merge_generations(settings: Settings, staged: StagedRows, round_idx: int,
                      tables: dict[str, int] | None = None) -> StageResult:
    """Every shard's rows into `specs` and `generations`."""
    db = connect(settings, at=tables)
    spec_rows = staged.table("specs", sort_by="spec_id").to_pylist()  # one per image: small
    generations = staged.table("generations", sort_by="generation_id")  # their PNGs go to the store as Arrow
    where = f"round_idx = {round_idx}"
    versions = {"specs": upsert(db, "specs", spec_rows, replace_where=where),
                "generations": upsert(db, "generations", generations, replace_where=where)}
    proposed = [r for r in spec_rows if r["accept_reason"] != "targeted"]  # the Proposer's own specs
    accepted = [r for r in proposed if r["valid"]]
    n = max(1, len(proposed))
    metrics = {"specs": len(proposed), "specs_valid": len(accepted), "spec_valid_share": len(accepted) / n,
               "mean_q_spec": sum(r["q_spec"] for r in proposed) / n,
               "mean_alignment": sum(r["alignment"] for r in proposed) / n,
               "mean_attempts": sum(r["attempts"] for r in proposed) / n,
               "generations": generations.num_rows, "distinct_prompts": len({r["prompt"] for r in accepted}),
               "targeted_specs": len(spec_rows) - len(proposed)}
    return StageResult("generate", round_idx, versions, generations.num_rows, metrics)


GENERATE = sharded_stage("generate", "generate-images", generate_rows, merge_generations, counted="generations")
