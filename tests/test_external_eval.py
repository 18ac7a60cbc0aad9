"""External evaluation inputs: a VQA JSON Lines file with images, GenEval metadata in, sample folders out."""

import json
import random
from pathlib import Path

import pytest
from PIL import Image

from models.protocol import SolveRequest
from models.registry import load_backbone
from storage.benchmark_files import read_jsonl, read_vqa_file
from tasks.logic.answers import normalize_answer
from tasks.evaluate import evaluate_vqa_file, generate_geneval_samples, measure_vocabulary_coverage
from tasks.logic.vocabulary_coverage import coverage_lines
from tests.conftest import SHIPPED_BASE
from world import language, splits
from world.geneval_metadata import check_metadata, metadata_for_prompt, spec_from_metadata
from world.render import render


def test_vqa_file_scores_the_solver_and_resolves_relative_paths(asg_home, tmp_path):
    (tmp_path / "imgs").mkdir()
    lines, images = [], []
    for i in range(6):
        scene = splits.scene_at("eval", 500 + i, 0)
        images.append(render(scene))
        Image.fromarray(images[-1]).save(tmp_path / "imgs" / f"{i}.png")
        item = language.questions_for_scene(scene, random.Random(i), n=1)[0]
        lines.append({"image": f"imgs/{i}.png", "question": item.question, "answer": item.answer,
                      "family": item.family})
    lines.append({"image": str(tmp_path / "imgs" / "0.png"), "question": lines[0]["question"],
                  "answer": "nonsense-answer"})  # an absolute path, and an answer no model gives
    (tmp_path / "vqa.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    result = evaluate_vqa_file.fn(str(SHIPPED_BASE), str(tmp_path / "vqa.jsonl"))
    assert result.metrics["vqa_file_items"] == 7
    # the same Solver answering the same items directly
    backbone = load_backbone(SHIPPED_BASE)
    backbone.attach_roles()
    answers = backbone.solve([SolveRequest(im, x["question"], temperature=0.0)
                              for im, x in zip(images + images[:1], lines)], seed=0)
    expected = sum(normalize_answer(a.text) == x["answer"] for a, x in zip(answers, lines)) / 7
    assert result.metrics["vqa_file_accuracy"] == pytest.approx(expected) and expected > 0
    assert "vqa_file_all" in result.metrics  # the line without a family


def _natural(question: str) -> str:
    """The question as a person types it: capitals, "?" attached, British spelling, odd spaces and quotes."""
    text = question.replace(" ?", "?").replace("color", "colour").replace(" the ", " the\u00a0 ")
    return text[0].upper() + text[1:].replace("red", "\u201cred\u201d")


def _vqa_files(tmp_path, n=8):
    """The same items twice: in the world's spacing and written naturally."""
    lines = []
    for i in range(n):
        scene = splits.scene_at("eval", 600 + i, 0)
        Image.fromarray(render(scene)).save(tmp_path / f"{i}.png")
        item = language.questions_for_scene(scene, random.Random(i), n=1)[0]
        lines.append({"image": f"{i}.png", "question": item.question, "answer": item.answer, "family": item.family})
    (tmp_path / "spaced.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    natural = [{**x, "question": _natural(x["question"]), "answer": x["answer"].capitalize() + "."} for x in lines]
    (tmp_path / "natural.jsonl").write_text("\n".join(json.dumps(x) for x in natural))
    return lines, natural


def test_a_naturally_written_vqa_file_scores_like_the_world_spaced_one(asg_home, tmp_path):
    spaced, natural = _vqa_files(tmp_path)
    assert all(n["question"] != s["question"] and n["question"].endswith("?") and " ?" not in n["question"]
               for n, s in zip(natural, spaced))
    a = evaluate_vqa_file.fn(str(SHIPPED_BASE), str(tmp_path / "spaced.jsonl")).metrics
    b = evaluate_vqa_file.fn(str(SHIPPED_BASE), str(tmp_path / "natural.jsonl")).metrics
    assert b == a and a["vqa_file_accuracy"] > 0
    coverage = measure_vocabulary_coverage.fn(str(SHIPPED_BASE), str(tmp_path / "natural.jsonl"), "question")
    assert coverage.n_unknown == 0 and coverage.n_words > 8 * 4


def test_a_file_of_unknown_words_is_counted_and_warned_about(asg_home, tmp_path):
    questions = ["What colour is the bench?", "How many dogs are on the sofa?",
                 "Is the red circle left of the blue square?"]
    (tmp_path / "coco.jsonl").write_text("\n".join(json.dumps({"image": "x.png", "question": q, "answer": "yes"})
                                                   for q in questions))
    coverage = measure_vocabulary_coverage.fn(str(SHIPPED_BASE), str(tmp_path / "coco.jsonl"), "question")
    assert coverage.n_words == 6 + 8 + 10
    assert dict(coverage.top_unknown) == {"bench": 1, "dogs": 1, "on": 1, "sofa": 1}
    summary, warning = coverage_lines(coverage, "coco.jsonl")
    assert "4 of 24 words (16.7%)" in summary
    assert warning.startswith("WARNING: 16.7% of the words of coco.jsonl") and "'bench'" in warning


@pytest.mark.usefixtures("prefect_server")
def test_asg_evaluate_prints_and_logs_the_out_of_vocabulary_share(asg_home, tmp_path, capsys, caplog):
    import mlflow

    from flows.evaluate import evaluate_flow
    from storage.settings import Settings

    _vqa_files(tmp_path, n=2)
    with open(tmp_path / "natural.jsonl", "a") as f:
        f.write("\n" + json.dumps({"image": "0.png", "question": "What colour is the bench?", "answer": "red"}))
    metrics = evaluate_flow(str(SHIPPED_BASE), vqa_file=str(tmp_path / "natural.jsonl"))
    assert metrics["vqa_file_oov_words"] == 1 and metrics["vqa_file_oov_share"] > 0.05
    printed = capsys.readouterr().out + capsys.readouterr().err + caplog.text
    assert "WARNING: " in printed and "'bench'" in printed
    mlflow.set_tracking_uri(Settings.from_env().mlflow_uri)
    run = mlflow.search_runs(experiment_names=["asg-evaluate"], output_format="list")[0]
    assert run.data.metrics["vqa_file_oov_share"] == pytest.approx(metrics["vqa_file_oov_share"])
    logged = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/vocabulary/vqa_file.json")
    assert logged["top_unknown"] == [["bench", 1]] and logged["n_unknown"] == 1


def test_bad_benchmark_files_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "a.png", "question": "q ?", "answer": "a"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl, line 2: not JSON"):
        read_jsonl(str(bad))
    bad.write_text('{"image": "a.png", "question": "q ?"}\n')
    with pytest.raises(ValueError, match=r"item 1: missing answer"):
        read_vqa_file(str(bad))
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_jsonl(str(tmp_path / "missing.jsonl"))


def test_world_metadata_round_trips_and_scores_renders():
    rng = random.Random(0)
    for category in language.CATEGORIES:
        for _ in range(10):
            prompt = language.sample_prompt(rng, category)
            meta = metadata_for_prompt(prompt)
            assert meta["tag"] == category and spec_from_metadata(meta) is not None
            assert check_metadata(render(language.scene_for_prompt(prompt, rng)), meta)
    left = {"tag": "position", "prompt": "a circle left of a square",
            "include": [{"class": "square", "count": 1}, {"class": "circle", "count": 1, "position": ["left of", 0]}]}
    scene = language.scene_for_prompt("a circle left of a square", rng)
    assert check_metadata(render(scene), left)
    assert spec_from_metadata({"include": [{"class": "bench", "count": 1}]}) is None


def test_geneval_samples_written_in_geneval_layout(asg_home, tmp_path):
    rng = random.Random(1)
    metas = [metadata_for_prompt(language.sample_prompt(rng, c)) for c in language.CATEGORIES]
    (tmp_path / "meta.jsonl").write_text("\n".join(json.dumps(m) for m in metas))
    out = tmp_path / "geneval"
    result = generate_geneval_samples.fn(str(SHIPPED_BASE), str(tmp_path / "meta.jsonl"), str(out),
                                         samples_per_prompt=2)
    assert sorted(p.name for p in out.iterdir()) == [f"{i:05d}" for i in range(6)]
    assert json.loads((out / "00003" / "metadata.jsonl").read_text()) == metas[3]
    assert sorted(p.name for p in (out / "00003" / "samples").iterdir()) == ["0000.png", "0001.png"]
    assert result.metrics["geneval_images"] == 12 and 0 <= result.metrics["geneval_overall"] <= 1


OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "geneval_evaluation_metadata.jsonl"


@pytest.mark.skipif(not OFFICIAL.is_file(), reason="the official GenEval metadata lies in ../shared/data")
def test_official_geneval_prompts_are_written_but_not_scored_by_the_world(asg_home, tmp_path):
    lines = read_jsonl(str(OFFICIAL))
    assert len(lines) == 553
    lines = lines[:3]
    (tmp_path / "three.jsonl").write_text("\n".join(json.dumps(m) for m in lines))
    result = generate_geneval_samples.fn(str(SHIPPED_BASE), str(tmp_path / "three.jsonl"), str(tmp_path / "out"),
                                         samples_per_prompt=1)
    assert "geneval_overall" not in result.metrics and result.metrics["geneval_prompts"] == 3
    assert (tmp_path / "out" / "00002" / "samples" / "0000.png").is_file()
