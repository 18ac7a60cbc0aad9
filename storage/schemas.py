"""LanceDB table schemas: one pyarrow schema per table, each row keyed by a deterministic id.

Tables (plural nouns) and who writes them:
| table | key | written by |
|---|---|---|
| images | image_id (sha256 of the stored PNG) | ingest |
| ingest_errors | error_id (sha256 of the path) | ingest |
| image_sources | path (one row per file or folder an ingest saw: the image it became, or why not) | ingest |
| questions | question_id = r{round}:{image_id}:k{k} | propose |
| answers | answer_id = {question_id}:s{i} | solve |
| votes | question_id | solve |
| specs | spec_id = r{round}:{image_id} | generate |
| generations | generation_id = {spec_id}:g{l} | generate |
| scores | generation_id | score |
| filter_decisions | item_id | filter |
| training_examples | example_id | filter |
| qa_items | question_id (one row per selected question: every signal and the decision, for the dashboard) | filter |
| role_states | state_id = r{round}:{name} (EMA baselines, adaptive beta) | filter, fine-tune |
| evaluations | evaluation_id = {checkpoint}:{suite} | evaluate |
| cross_checks | question_id (the mirrored-image and caption-drawn views of a selected question) | cross-check |
| tile_names | tile_id = r{round}:{tile_key} (each distinct object tile and the Solver's name for it) | compose |
| compositions | composition_id = r{round}:{image_id}:c{j} (a scene recomposed from named tiles, its labelled questions) | compose |
| tile_verdicts | generation_id (a generated image read tile by tile: the named objects it shows, match or not) | tile-verify |
| tile_corrections | correction_id = {spec_id}:fix (a sample of a spec with no match, its tiles replaced by named ones) | tile-verify |
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 2


def _schema(*fields: pa.Field) -> pa.Schema:
    return pa.schema(list(fields), metadata={"asg_schema_version": str(SCHEMA_VERSION)})


s, i, f, b = pa.string(), pa.int64(), pa.float64(), pa.bool_()

SCHEMAS: dict[str, pa.Schema] = {
    "images": _schema(
        pa.field("image_id", s, nullable=False), pa.field("source", s), pa.field("source_uri", s),
        pa.field("width", i), pa.field("height", i), pa.field("png", pa.large_binary())),
    "ingest_errors": _schema(
        pa.field("error_id", s, nullable=False), pa.field("source", s), pa.field("path", s),
        pa.field("reason", s), pa.field("message", s)),
    "image_sources": _schema(  # status: "original" | "duplicate" | "rejected" | "skipped"
        pa.field("path", s, nullable=False), pa.field("source", s), pa.field("status", s), pa.field("reason", s),
        pa.field("image_id", s), pa.field("original_uri", s)),
    "questions": _schema(
        pa.field("question_id", s, nullable=False), pa.field("round_idx", i), pa.field("image_id", s),
        pa.field("candidate_idx", i), pa.field("raw_text", s), pa.field("question", s),
        pa.field("validator_a", s), pa.field("validator_b", s), pa.field("well_formed", b),
        pa.field("reject_reason", s), pa.field("greedy_answer", s), pa.field("ste_raw", f),
        pa.field("ste_difficulty", f), pa.field("selected", b)),
    "answers": _schema(
        pa.field("answer_id", s, nullable=False), pa.field("question_id", s), pa.field("round_idx", i),
        pa.field("sample_idx", i), pa.field("framing", s), pa.field("temperature", f), pa.field("top_p", f),
        pa.field("text", s), pa.field("normalized", s), pa.field("mapped", s), pa.field("token_entropies", pa.list_(f)),
        pa.field("is_majority", b), pa.field("answer_share", f), pa.field("reward", f),
        pa.field("shaped_reward", f)),
    "votes": _schema(
        pa.field("question_id", s, nullable=False), pa.field("round_idx", i), pa.field("n_samples", i),
        pa.field("majority", s), pa.field("majority_fraction", f), pa.field("answer_entropy", f),
        pa.field("margin", f), pa.field("sample_ste_mean", f), pa.field("theta_easy", f), pa.field("bucket", s),
        pa.field("informativeness", f), pa.field("proposer_reward", f)),
    "specs": _schema(
        pa.field("spec_id", s, nullable=False), pa.field("round_idx", i), pa.field("image_id", s),
        pa.field("raw_text", s), pa.field("prompt", s), pa.field("checks_json", s), pa.field("n_checks", i),
        pa.field("q_spec", f), pa.field("attempts", i), pa.field("alignment", f),
        pa.field("source_answers_json", s), pa.field("accept_reason", s), pa.field("valid", b)),
    "generations": _schema(
        pa.field("generation_id", s, nullable=False), pa.field("spec_id", s), pa.field("round_idx", i),
        pa.field("sample_idx", i), pa.field("prompt", s), pa.field("png", pa.large_binary())),
    "scores": _schema(
        pa.field("generation_id", s, nullable=False), pa.field("spec_id", s), pa.field("round_idx", i),
        pa.field("fidelity", f), pa.field("cycle", f), pa.field("diversity", f), pa.field("contradiction", f),
        pa.field("q_spec", f), pa.field("reward", f), pa.field("caption", s), pa.field("check_answers_json", s)),
    "filter_decisions": _schema(
        pa.field("item_id", s, nullable=False), pa.field("round_idx", i), pa.field("item_kind", s),
        pa.field("kept", b), pa.field("reason", s)),
    "qa_items": _schema(
        pa.field("question_id", s, nullable=False), pa.field("round_idx", i), pa.field("image_id", s),
        pa.field("question", s), pa.field("family", s), pa.field("validator_a", s), pa.field("validator_b", s),
        pa.field("majority", s), pa.field("majority_fraction", f), pa.field("answer_entropy", f),
        pa.field("ste_raw", f), pa.field("ste_difficulty", f), pa.field("theta_easy", f), pa.field("bucket", s),
        pa.field("informativeness", f), pa.field("proposer_reward", f), pa.field("mean_solver_reward", f),
        pa.field("kept", b), pa.field("reason", s), pa.field("answers_json", s)),
    "training_examples": _schema(
        pa.field("example_id", s, nullable=False), pa.field("round_idx", i), pa.field("role", s),
        pa.field("kind", s), pa.field("source_id", s), pa.field("image_table", s), pa.field("image_key", s),
        pa.field("prompt", s), pa.field("target", s), pa.field("framing", s), pa.field("weight", f),
        pa.field("reward", f), pa.field("advantage", f)),
    "role_states": _schema(
        pa.field("state_id", s, nullable=False), pa.field("round_idx", i), pa.field("name", s),
        pa.field("value", f)),
    "evaluations": _schema(
        pa.field("evaluation_id", s, nullable=False), pa.field("checkpoint_uri", s), pa.field("round_idx", i),
        pa.field("suite", s), pa.field("metrics_json", s)),
    "cross_checks": _schema(
        pa.field("question_id", s, nullable=False), pa.field("round_idx", i), pa.field("image_id", s),
        pa.field("flip_question", s), pa.field("flip_text", s), pa.field("flip_answer", s), pa.field("caption", s),
        pa.field("caption_view_text", s), pa.field("caption_view_answer", s)),
    "tile_names": _schema(
        pa.field("tile_id", s, nullable=False), pa.field("round_idx", i), pa.field("tile_key", s),
        pa.field("captions_json", s), pa.field("color", s), pa.field("shape", s), pa.field("named", b)),
    "compositions": _schema(
        pa.field("composition_id", s, nullable=False), pa.field("round_idx", i), pa.field("image_id", s),
        pa.field("placement_json", s), pa.field("objects_json", s), pa.field("caption", s),
        pa.field("questions_json", s), pa.field("greedy_json", s), pa.field("png", pa.large_binary())),
    "tile_verdicts": _schema(
        pa.field("generation_id", s, nullable=False), pa.field("round_idx", i), pa.field("spec_id", s),
        pa.field("objects_json", s), pa.field("verdict", s)),
    "tile_corrections": _schema(
        pa.field("correction_id", s, nullable=False), pa.field("round_idx", i), pa.field("spec_id", s),
        pa.field("generation_id", s), pa.field("prompt", s), pa.field("objects_json", s),
        pa.field("changed_cells_json", s), pa.field("png", pa.large_binary())),
}

KEYS: dict[str, str] = {name: schema.names[0] for name, schema in SCHEMAS.items()}
