"""Generate stage: the Proposer writes a text-to-image spec per image, the Generator draws L
images per accepted spec.

Writes `specs` (raw text, prompt, checks, Q_spec, valid) and `generations` (PNG per sample).
"""

from __future__ import annotations

import json

from prefect import task

from storage.image_files import encode_png
from storage.settings import Settings
from storage.tables import connect, upsert
from tasks.logic.proposals import parse_spec
from tasks.round_inputs import backbone_for, round_images
from tasks.stage_result import StageResult

MIN_CHECKS = 2
MIN_SPEC_QUALITY = 0.55


@task(name="generate-images")
def generate_images(round_idx: int, checkpoint_uri: str, source: str, n_images: int, n_per_prompt: int = 3,
                    temperature: float = 1.0, seed: int = 0) -> StageResult:
    settings = Settings.from_env()
    db = connect(settings)
    backbone = backbone_for(checkpoint_uri, settings)
    image_ids, images = round_images(db, source, n_images, round_idx, seed)
    raw = backbone.propose_specs(images, temperature, seed=seed * 1000 + round_idx + 17)
    spec_rows = []
    for image_id, text in zip(image_ids, raw):
        spec = parse_spec(text)
        valid = bool(spec.prompt) and len(spec.checks) >= MIN_CHECKS and spec.quality >= MIN_SPEC_QUALITY
        spec_rows.append({"spec_id": f"r{round_idx}:{image_id}", "round_idx": round_idx, "image_id": image_id,
                          "raw_text": text, "prompt": spec.prompt, "checks_json": json.dumps(spec.checks),
                          "n_checks": len(spec.checks), "q_spec": spec.quality, "valid": valid})
    accepted = [r for r in spec_rows if r["valid"]]
    drawn = backbone.generate_images([r["prompt"] for r in accepted], n_per_prompt, temperature,
                                     seed=seed * 1000 + round_idx + 31)
    generation_rows = [
        {"generation_id": f"{spec['spec_id']}:g{l}", "spec_id": spec["spec_id"], "round_idx": round_idx,
         "sample_idx": l, "prompt": spec["prompt"], "png": encode_png(image)}
        for spec, group in zip(accepted, drawn) for l, image in enumerate(group)
    ]
    where = f"round_idx = {round_idx}"
    versions = {"specs": upsert(db, "specs", spec_rows, replace_where=where),
                "generations": upsert(db, "generations", generation_rows, replace_where=where)}
    metrics = {"specs": len(spec_rows), "specs_valid": len(accepted),
               "spec_valid_share": len(accepted) / max(1, len(spec_rows)),
               "mean_q_spec": sum(r["q_spec"] for r in spec_rows) / max(1, len(spec_rows)),
               "generations": len(generation_rows), "distinct_prompts": len({r["prompt"] for r in accepted})}
    return StageResult("generate", round_idx, versions, len(generation_rows), metrics)
