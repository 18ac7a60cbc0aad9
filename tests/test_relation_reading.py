"""Relation reading on the embedded backbone: cell channels, relation answers as steps, referent attention."""

import dataclasses
import random
import json

import numpy as np
import pytest
import torch

from models.protocol import SolveRequest, TrainingExample
from models.registry import create_backbone, load_backbone
from models.relation_reading import ATTEND_WEIGHT, final_answer, step_candidates, with_position_channels
from world.render import render
from world.scenes import Scene, SceneObject
from world import splits
from world.questions import oracle_answer
from world.seed_set import reading_hints, relation_reading_examples, seed_examples

# red circle at row 0, column 1; blue square at row 2, column 3; green triangle at row 3, column 0
SCENE = Scene((SceneObject("circle", "red", 6, 1, 0, 0), SceneObject("square", "blue", 6, 11, 0, 0),
               SceneObject("triangle", "green", 6, 12, 0, 0)))
LEFT = "is the red circle left of the blue square ?"
BELOW = "is the green triangle below the square ?"


def test_step_candidates_are_the_cell_pairs_consistent_with_the_label():
    assert step_candidates(LEFT, "yes") == ["zero one", "zero two", "zero three", "one two", "one three",
                                           "two three"]
    assert step_candidates(LEFT, "no") == ["one zero", "two zero", "two one", "three zero", "three one",
                                          "three two"]
    assert step_candidates(BELOW, "yes") == step_candidates(LEFT, "no")  # below: first row > second row
    assert step_candidates("how many circles are there ?", "two") is None
    assert step_candidates(LEFT, "two") is None


def test_final_answer_is_the_last_word_after_steps_only():
    assert final_answer("one three yes") == "yes"
    assert final_answer("two") == "two"
    assert final_answer("red circle") == "red circle"


def test_position_channels_replace_the_last_dimensions_with_one_hot_row_and_column():
    patch = torch.ones(1, 2, 12)
    out = with_position_channels(patch, torch.tensor([[6, 15]]))  # (row 1, col 2) and (row 3, col 3)
    assert torch.equal(out[..., :4], patch[..., :4])
    assert out[0, 0, 4:].tolist() == [0, 8, 0, 0, 0, 0, 8, 0]
    assert out[0, 1, 4:].tolist() == [0, 0, 0, 8, 0, 0, 0, 8]


def test_reading_hints_name_the_referents_cells_and_steps():
    assert reading_hints(SCENE, LEFT) == {"attend": (1, 11), "steps": "one three"}
    assert reading_hints(SCENE, BELOW) == {"attend": (12, 11), "steps": "three two"}
    assert reading_hints(SCENE, "what color is the triangle ?") == {"attend": (12,)}
    assert reading_hints(SCENE, "how many objects are there ?") == {}


def test_seed_questions_carry_hints_and_relation_reading_adds_locate_items_and_every_relation():
    plain = seed_examples(6, 0, ("canonical",))
    relation = [e for e in plain if e["kind"] == "vqa" and (" left of " in e["prompt"] or " above " in e["prompt"]
                                                            or " right of " in e["prompt"] or " below " in e["prompt"])]
    assert relation and all(len(e["steps"].split()) == 2 and len(e["attend"]) == 2 for e in relation)
    extra = relation_reading_examples(6, 0)
    locate = [e for e in extra if e["prompt"].endswith((" left of", " above"))]
    asked = [e for e in extra if e["prompt"].endswith("?")]
    assert locate and all(e["target"] in ("zero", "one", "two", "three") and len(e["attend"]) == 1 for e in locate)
    assert len(asked) > 3 * len(relation) and {e["target"] for e in asked} == {"yes", "no"}
    for e in asked:  # each label and its steps agree with the scene, and the steps imply the label
        assert e["target"] in ("yes", "no") and e["steps"] in step_candidates(e["prompt"], e["target"])
    scene_one = splits.scene_at("seed", 0, 0)
    first = [e for e in asked if e["image"] is extra[0]["image"]]
    assert all(oracle_answer(scene_one, e["prompt"]) == e["target"] for e in first)


@pytest.fixture(scope="module")
def reader():
    backbone = create_backbone("shapes", seed=0, size="tiny", relation_reading=True)
    backbone.attach_roles()
    return backbone


def _example(target="yes", **fields):
    return TrainingExample("vqa", image=render(SCENE), prompt=LEFT, target=target, **fields)


def test_cell_channels_change_the_image_encoding_only_with_relation_reading():
    plain = create_backbone("shapes", seed=0, size="tiny")
    reading = create_backbone("shapes", seed=0, size="tiny", relation_reading=True)
    offset = plain.vocab.image_offset
    ids, cells = torch.tensor([[5, offset + 3, offset + 40]]), torch.tensor([[-1, 0, 5]])
    a, b = plain.network.embed(ids, cells), reading.network.embed(ids, cells)
    assert torch.equal(a[0, 0], b[0, 0]) and not torch.equal(a[0, 1], b[0, 1])
    assert b[0, 2, -8:].tolist()[1] > 7.0  # cell 5: row 1


def test_relation_labels_without_steps_train_on_the_models_most_likely_consistent_steps(reader):
    found = reader._with_steps("solver", [_example("no")])[0]
    assert found.steps in step_candidates(LEFT, "no")
    with torch.no_grad():
        nll = {c: float(reader.example_nll("solver", [_example("no", steps=c)])) for c in step_candidates(LEFT, "no")}
    assert found.steps == min(nll, key=nll.get)
    with torch.no_grad():  # the steps stay those of the first visit, whatever role scores the example next
        assert float(reader.example_nll(None, [_example("no")])) == pytest.approx(
            float(reader.example_nll(None, [_example("no", steps=found.steps)])))
    counting = TrainingExample("vqa", image=render(SCENE), prompt="how many objects are there ?", target="three")
    assert reader._with_steps("solver", [counting])[0].steps == ""


def test_attention_loss_is_minus_log_of_the_weight_eager_attention_reports(reader):
    example = _example(steps="one three", attend=(1, 11))
    reader.network.train()
    try:
        with torch.no_grad():
            total = float(reader.example_nll(None, [example])[0])
            answer_only = float(reader._token_nll(None, reader._rows([example]))[0])
    finally:
        reader.network.eval()
    lm = reader.network.lm
    lm.config._attn_implementation = "eager"
    try:
        rows = reader._rows([example])
        batch = reader._pad(rows)
        with torch.no_grad(), lm.disable_adapter():
            out = lm(inputs_embeds=reader.network.embed(batch.ids, batch.cells), attention_mask=batch.mask,
                     position_ids=batch.positions, output_attentions=True)
    finally:
        lm.config._attn_implementation = "sdpa"
    weights = out.attentions[-1][0]  # last layer: heads x queries x keys
    ans = len(reader._prefix("vqa", example.image, LEFT)[0]) - 1
    expected = -(np.log(float(weights[0, ans, 2 + 1])) + np.log(float(weights[1, ans, 2 + 11]))) / 2
    assert total - answer_only == pytest.approx(ATTEND_WEIGHT * expected, rel=1e-4)


def test_training_with_attend_moves_attention_to_the_named_objects():
    backbone = create_backbone("shapes", seed=0, size="tiny", relation_reading=True)
    example = _example(steps="one three", attend=(1, 11))
    params = backbone.trainable_parameters(None)
    optimizer = torch.optim.Adam(params, lr=1e-2)
    backbone.network.train()
    with torch.no_grad():
        before = float(backbone.example_nll(None, [example]) - backbone._token_nll(None, backbone._rows([example])))
    for _ in range(30):
        optimizer.zero_grad()
        backbone.example_nll(None, [example]).sum().backward()
        optimizer.step()
    with torch.no_grad():
        after = float(backbone.example_nll(None, [example]) - backbone._token_nll(None, backbone._rows([example])))
    backbone.network.eval()
    assert after < 0.5 * before


def test_solve_decodes_steps_and_returns_the_final_answer():
    backbone = create_backbone("shapes", seed=0, size="tiny", relation_reading=True)
    example = _example(steps="one three")
    optimizer = torch.optim.Adam(backbone.trainable_parameters(None), lr=1e-2)
    for _ in range(40):
        optimizer.zero_grad()
        backbone.example_nll(None, [example]).sum().backward()
        optimizer.step()
    backbone.network.eval()
    toks, _ = backbone._decode([backbone._prefix("vqa", example.image, LEFT)], 4, False, [0.0], [1.0], seed=0)
    assert backbone.vocab.decode_text(toks[0]) == "one three yes"
    result = backbone.solve([SolveRequest(example.image, LEFT, temperature=0.0)], seed=0)[0]
    assert result.text == "yes" and len(result.token_entropies) == 3  # both steps and the answer


def test_save_load_keeps_relation_reading(reader, tmp_path):
    reader.save(tmp_path / "reader")
    meta = json.loads((tmp_path / "reader" / "config.json").read_text())
    assert meta["config"]["relation_reading"] is True
    loaded = load_backbone(tmp_path / "reader")
    assert loaded.config.relation_reading and loaded.network.position_channels
    with torch.no_grad():
        assert torch.allclose(loaded.example_nll("solver", [_example(steps="one three")]),
                              reader.example_nll("solver", [_example(steps="one three")]))


def test_a_checkpoint_without_the_field_loads_without_relation_reading(tmp_path):
    plain = create_backbone("shapes", seed=0, size="tiny")
    plain.save(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "config.json").read_text())
    del meta["config"]["relation_reading"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(meta))
    loaded = load_backbone(tmp_path / "old")
    assert not loaded.config.relation_reading
    example = _example(steps="one three", attend=(1, 11))
    with torch.no_grad():  # steps and attend are ignored: the target is the label alone
        assert torch.allclose(loaded.example_nll(None, [example]),
                              loaded.example_nll(None, [dataclasses.replace(example, steps="", attend=())]))


def test_a_latent_base_takes_relation_reading_from_its_trunk(reader, tmp_path):
    trunk = create_backbone("shapes", seed=0, size="tiny", relation_reading=True)
    trunk.save(tmp_path / "trunk")
    latent = create_backbone("shapes-flow", seed=0, size="tiny", freeze_understanding=True)
    assert not latent.config.relation_reading
    latent.init_understanding_from(tmp_path / "trunk")
    assert latent.config.relation_reading and latent.network.position_channels
    image = np.zeros((32, 32, 3), np.uint8)
    ex = TrainingExample("vqa", image=image, prompt="how many objects are there ?", target="zero")
    with torch.no_grad():
        assert torch.allclose(latent.example_nll(None, [ex]), trunk.example_nll(None, [ex]))


def test_mixture_groups_are_weighed_apart_from_their_kind():
    from models.training import mixture_batches

    plain = [TrainingExample("vqa", prompt=f"q{i}") for i in range(5)]
    relate = [TrainingExample("vqa", prompt=f"r{i}") for i in range(5)]
    batch = next(mixture_batches(plain, {"vqa": 0.25, "relate": 0.75}, 4000, seed=0, groups={"relate": relate}))
    share = sum(ex.prompt.startswith("r") for ex in batch) / len(batch)
    assert 0.72 < share < 0.78


def test_the_shipped_reading_base_answers_relation_questions_with_yes_or_no():
    from pathlib import Path

    from world import questions

    base = load_backbone(Path(__file__).resolve().parent.parent / "models" / "checkpoints" / "shapes-reading-base")
    assert base.config.relation_reading
    requests, truths = [], []
    for i in range(12):
        scene = splits.scene_at("validation", i, 0)
        for item in questions.questions_for_scene(scene, random.Random(i), n=8):
            if item.family == "relation":
                requests.append(SolveRequest(render(scene), item.question, temperature=0.0))
                truths.append(item.answer)
    answers = [r.text for r in base.solve(requests, seed=0)]
    assert requests and set(answers) <= {"yes", "no"}
    assert sum(a == t for a, t in zip(answers, truths)) / len(truths) > 0.6  # the card: 0.754 held out
