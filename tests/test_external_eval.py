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
from tasks.evaluate import evaluate_vqa_file, generate_geneval_samples
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
