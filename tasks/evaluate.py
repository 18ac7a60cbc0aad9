"""Evaluate stage: score a checkpoint on the embedded world's held-out sets.

Ground truth is read here and only here (and in diagnostics); results go to the
`evaluations` table and are returned for the flow to log. External files' questions and prompts take
the world's text normal form before they reach the backbone, and `measure_vocabulary_coverage` counts
the words of a file the backbone cannot read.
"""

from __future__ import annotations

import json

from prefect import task

from storage.settings import Settings
from storage.tables import connect, upsert
from tasks.logic.vocabulary_coverage import VocabularyCoverage, vocabulary_coverage
from tasks.round_inputs import backbone_for
from tasks.stage import stage_task
from tasks.stage_result import StageResult
from tasks.logic.held_out_evaluation import EvalConfig, evaluate
from text.normal_form import normalize_text


@stage_task("evaluate", "evaluate-checkpoint")
def evaluate_checkpoint(checkpoint_uri: str, round_idx: int, eval_config: EvalConfig,
                        namespace: str = "") -> StageResult:
    settings = Settings.from_env().within(namespace)
    metrics = evaluate(backbone_for(checkpoint_uri, settings), eval_config)
    split = "" if eval_config.split == "eval" else f"{eval_config.split}-"
    suite = f"shapes-world-{split}seed{eval_config.seed}-vqa{eval_config.vqa_scenes}-gen{eval_config.geneval_per_category}"
    db = connect(settings)
    version = upsert(db, "evaluations", [{
        "evaluation_id": f"{checkpoint_uri}:{suite}", "checkpoint_uri": checkpoint_uri, "round_idx": round_idx,
        "suite": suite, "metrics_json": json.dumps(metrics)}])
    return StageResult("evaluate", round_idx, {"evaluations": version}, 1, metrics)


@task(name="evaluate-vqa-file")
def evaluate_vqa_file(checkpoint_uri: str, vqa_file: str) -> StageResult:
    """Accuracy of the Solver (greedy, canonical framing) on an external VQA JSON Lines file."""
    from collections import defaultdict

    from models.protocol import SolveRequest
    from storage.benchmark_files import read_vqa_file
    from storage.image_files import read_image
    from tasks.logic.answers import normalize_answer

    settings = Settings.from_env()
    backbone = backbone_for(checkpoint_uri, settings)
    items = read_vqa_file(vqa_file, settings.fsspec_options())
    images = [read_image(it["image"], backbone.image_size, settings.fsspec_options()) for it in items]
    results = backbone.solve([SolveRequest(im, normalize_text(it["question"]), temperature=0.0)
                              for im, it in zip(images, items)], seed=0)
    by_family: dict[str, list[bool]] = defaultdict(list)
    for it, res in zip(items, results):
        by_family[it.get("family", "all")].append(normalize_answer(res.text) == normalize_answer(str(it["answer"])))
    flat = [x for v in by_family.values() for x in v]
    metrics = {"vqa_file_accuracy": sum(flat) / len(flat), "vqa_file_items": float(len(flat))}
    if set(by_family) != {"all"}:
        metrics.update({f"vqa_file_{f}": sum(v) / len(v) for f, v in sorted(by_family.items())})
    return StageResult("evaluate-vqa-file", -1, {}, len(flat), metrics)


@task(name="generate-geneval-samples")
def generate_geneval_samples(checkpoint_uri: str, metadata_file: str, out_dir: str, samples_per_prompt: int = 4,
                             temperature: float = 1.0, seed: int = 0) -> StageResult:
    """Draw images for every GenEval metadata line into GenEval's folder layout; score them with the
    world's parser when every line names shapes-world objects (otherwise GenEval's own evaluator scores them)."""
    from collections import defaultdict

    from storage.benchmark_files import read_jsonl, write_geneval_sample
    from world.geneval_metadata import check_metadata, spec_from_metadata

    settings = Settings.from_env()
    backbone = backbone_for(checkpoint_uri, settings)
    lines = read_jsonl(metadata_file, settings.fsspec_options())
    for number, meta in enumerate(lines, start=1):
        if not meta.get("prompt"):
            raise ValueError(f"{metadata_file}, line {number}: no prompt")
    drawn = backbone.generate_images([normalize_text(m["prompt"]) for m in lines], samples_per_prompt, temperature,
                                     seed=seed)
    for index, (meta, images) in enumerate(zip(lines, drawn)):
        write_geneval_sample(out_dir, index, meta, images, settings.fsspec_options())
    metrics = {"geneval_prompts": float(len(lines)), "geneval_images": float(len(lines) * samples_per_prompt)}
    if all(spec_from_metadata(m) is not None for m in lines):
        by_tag: dict[str, list[bool]] = defaultdict(list)
        for meta, images in zip(lines, drawn):
            by_tag[meta.get("tag", "all")].extend(check_metadata(im, meta) for im in images)
        tags = {f"geneval_{t}": sum(v) / len(v) for t, v in sorted(by_tag.items())}
        metrics.update(tags, geneval_overall=sum(tags.values()) / len(tags))
    return StageResult("geneval-samples", -1, {}, len(lines), metrics)


@task(name="measure-vocabulary-coverage")
def measure_vocabulary_coverage(checkpoint_uri: str, benchmark_file: str, text_field: str) -> VocabularyCoverage:
    """How many words of a JSON Lines file's `text_field` ("question" of a VQA file, "prompt" of GenEval
    metadata) the checkpoint's backbone cannot read, and which."""
    from storage.benchmark_files import read_jsonl

    settings = Settings.from_env()
    texts = [str(row.get(text_field, "")) for row in read_jsonl(benchmark_file, settings.fsspec_options())]
    return vocabulary_coverage(texts, backbone_for(checkpoint_uri, settings).unknown_words(texts))
