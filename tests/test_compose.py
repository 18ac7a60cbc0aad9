"""The compose label source: tiles of unlabeled images, named by the Solver, recomposed into new labelled scenes.

Pure tile functions with hand-made arrays; labels of a recomposition equal the oracle on the moved true scene when
the names are right; non-tiled images are refused with one line; a tiny `compose` round trains the Solver on the
recomposed scenes only, and the audit judges them."""

import json

import numpy as np
import torch
import pytest
from PIL import Image

from storage.image_files import decode_png
from storage.settings import Settings
from storage.tables import connect, read
from tasks.compose import compose_scenes, composition_rows
from tasks.generate import targeted_spec_rows
from tasks.logic.stage_configs import GenerateConfig
from tasks.ingest import ingest_source
from tasks.logic.tile_composition import (
    agreed_name,
    background_of,
    join_tiles,
    placed_tiles,
    probe_cells,
    split_tiles,
    tile_key,
)
from tests.conftest import SHIPPED_BASE
from world import language, parser
from world.render import render
from world.scenes import GRID, Scene, SceneObject


def test_split_and_join_are_inverse_and_row_major():
    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    tiles = split_tiles(image, 2)
    assert tiles.shape == (4, 2, 3, 3)
    assert (tiles[1] == image[0:2, 3:6]).all() and (tiles[2] == image[2:4, 0:3]).all()
    assert (join_tiles(tiles, 2) == image).all()
    with pytest.raises(ValueError, match="does not split"):
        split_tiles(np.zeros((5, 4, 3), np.uint8), 2)


def test_background_is_the_modal_tile_with_its_share():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0:2, 0:2] = 7
    background, share = background_of([a, b], 2)
    assert int(background.max()) == 0 and share == 7 / 8


def test_placed_tiles_puts_each_tile_in_its_cell_and_refuses_repeats():
    bg, obj = np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 5, np.uint8)
    grid = placed_tiles([obj], [3], bg, 2)
    assert [int(t.max()) for t in grid] == [0, 0, 0, 5]
    with pytest.raises(ValueError, match="repeat"):
        placed_tiles([obj, obj], [1, 1], bg, 2)


def test_names_need_every_probe_to_agree_on_one_object():
    assert agreed_name([("red", "circle")] * 3) == ("red", "circle")
    assert agreed_name([("red", "circle"), None, ("red", "circle")]) is None
    assert agreed_name([("red", "circle"), ("blue", "circle")]) is None
    assert agreed_name([]) is None
    assert len(set(probe_cells(4))) == 3 and all(0 <= c < 16 for c in probe_cells(4))


def _scene():
    return Scene((SceneObject("circle", "red", 6, 1, 0, 0), SceneObject("square", "blue", 5, 6, 1, 1),
                  SceneObject("triangle", "green", 7, 12, 0, 0)))


def test_recomposed_labels_equal_the_oracle_on_the_moved_true_scene():
    scene = _scene()
    image = render(scene)
    bg = split_tiles(image, GRID)[0]
    names = {tile_key(split_tiles(image, GRID)[o.cell]): (o.color, o.shape) for o in scene.objects}
    rows = composition_rows(0, "img", image, tile_key(bg), names, bg, per_image=3, questions_per_scene=8, seed=1)
    assert len(rows) == 3 and len({r["composition_id"] for r in rows}) == 3
    families = set()
    for row in rows:
        composed = decode_png(row["png"])
        placement = json.loads(row["placement_json"])
        assert sorted(src for src, _ in placement) == [1, 6, 12]
        at = {o.cell: o for o in scene.objects}
        moved = Scene(tuple(SceneObject(at[s].shape, at[s].color, at[s].size, d, at[s].jx, at[s].jy)
                            for s, d in placement))
        assert (composed == render(moved)).all()  # the tiles really moved, pixel for pixel
        assert parser.parsed_caption(composed) == language.caption(moved) == row["caption"]
        for question, label, family in json.loads(row["questions_json"]):
            assert label == language.oracle_answer(moved, question)
            families.add(family)
    assert "relation" in families


def test_an_image_with_an_unnamed_tile_is_not_recomposed():
    scene = _scene()
    image = render(scene)
    bg = split_tiles(image, GRID)[0]
    tiles = split_tiles(image, GRID)
    names = {tile_key(tiles[1]): ("red", "circle"), tile_key(tiles[6]): None}
    assert composition_rows(0, "img", image, tile_key(bg), names, bg, 2, 8, 0) == []


def test_targeted_specs_cycle_the_weak_categories_with_their_implied_checks():
    rows = targeted_spec_rows(2, 8, seed=0)
    assert [r["spec_id"] for r in rows] == [f"r2:t{k}" for k in range(8)]
    categories = [language.parse_prompt(r["prompt"]).category for r in rows]
    assert categories == ["color_attr", "position", "counting", "color_attr", "two_object", "position",
                          "color_attr", "color_attr"]
    for r in rows:
        assert [tuple(c) for c in json.loads(r["checks_json"])] == language.checks_for_prompt(r["prompt"])
        assert r["valid"] and r["q_spec"] >= 0.35 and r["image_id"] == ""
    assert targeted_spec_rows(2, 8, seed=0) == rows and targeted_spec_rows(3, 8, seed=0) != rows
    heavy = targeted_spec_rows(2, 4, seed=0, categories=("color_attr", "counting", "color_attr"))
    assert [language.parse_prompt(r["prompt"]).category for r in heavy] == ["color_attr", "counting",
                                                                            "color_attr", "color_attr"]


def test_an_unknown_targeted_category_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown GenEval category 'colour_attr'; categories are single_object"):
        GenerateConfig(targeted_categories=("position", "colour_attr"))


def test_compose_imitates_no_image_accepted_on_relation_checks_the_solver_cannot_judge():
    import pandas as pd

    from tasks.filter import _verified_generation
    from tasks.logic.filtering import COMPOSE_JUDGED_KINDS, FilterConfig

    specs = {"p": {"prompt": "a circle left of a square", "image_id": "",
                   "checks_json": json.dumps(language.checks_for_prompt("a circle left of a square"))},
             "c": {"prompt": "a red circle and a blue square", "image_id": "",
                   "checks_json": json.dumps(language.checks_for_prompt("a red circle and a blue square"))}}
    scores = pd.DataFrame([{"generation_id": f"{k}:g0", "spec_id": k, "reward": 0.9, "q_spec": 0.6,
                            "contradiction": 0.0} for k in specs])
    decisions, examples = [], []
    no_check_labels = FilterConfig(check_label_reward=float("inf"))  # as the compose preset runs it
    _verified_generation(0, scores, specs, no_check_labels, decisions, examples, COMPOSE_JUDGED_KINDS)
    assert {d["item_id"]: d["reason"] for d in decisions} == {"p:g0": "check-not-judged", "c:g0": "accepted"}
    assert [e["source_id"] for e in examples] == ["c:g0"]  # no Proposer example either: the spec is targeted
    decisions, examples = [], []
    _verified_generation(0, scores, specs, no_check_labels, decisions, examples)  # other presets: unchanged
    assert all(d["kept"] for d in decisions)


def test_a_generated_image_is_read_tile_by_tile_against_its_prompt():
    from tasks.logic.tile_verdicts import MATCH, MISMATCH, UNNAMED, UNPARSED, perceived_objects, tile_verdict

    names = {"rc": ("red", "circle"), "bs": ("blue", "square"), "?": None}
    # Row-major 4x4 keys: a red circle in cell 1 (row 0, col 1), a blue square in cell 6 (row 1, col 2).
    keys = ["bg"] * 16
    keys[1], keys[6] = "rc", "bs"
    objects = perceived_objects(keys, names, "bg", GRID)
    assert [(o.color, o.shape, o.cell) for o in objects] == [("red", "circle", 1), ("blue", "square", 6)]
    verdicts = {p: tile_verdict(p, objects, GRID) for p in (
        "a circle left of a square", "a circle above a square", "a square left of a circle",
        "a red circle and a blue square", "a blue circle and a red square", "two circles", "a circle")}
    assert verdicts == {"a circle left of a square": MATCH, "a circle above a square": MATCH,
                        "a square left of a circle": MISMATCH, "a red circle and a blue square": MATCH,
                        "a blue circle and a red square": MISMATCH, "two circles": MISMATCH, "a circle": MISMATCH}
    keys[6] = "bs"
    keys[5] = "bs"  # same column as nothing; now two squares
    assert tile_verdict("a circle left of a square", perceived_objects(keys, names, "bg", GRID), GRID) == MISMATCH
    same_column = ["bg"] * 16
    same_column[1], same_column[5] = "rc", "bs"  # column 1 both: left/right is undecidable from the cells
    objects = perceived_objects(same_column, names, "bg", GRID)
    assert tile_verdict("a circle left of a square", objects, GRID) == MISMATCH
    assert tile_verdict("a circle above a square", objects, GRID) == MATCH
    keys[9] = "?"
    assert perceived_objects(keys, names, "bg", GRID) is None
    assert tile_verdict("a circle", None, GRID) == UNNAMED
    assert tile_verdict("draw something nice", objects, GRID) == UNPARSED


def test_compose_imitates_the_best_tile_matched_image_of_each_spec():
    import pandas as pd

    from tasks.filter import _tile_verified_generation
    from tasks.logic.filtering import FilterConfig

    specs = {k: {"prompt": p, "image_id": img, "raw_text": p, "checks_json": json.dumps(checks)}
             for k, p, img, checks in (
                 ("pos", "a circle left of a square", "", language.checks_for_prompt("a circle left of a square")),
                 ("own", "a red circle", "img-1", language.checks_for_prompt("a red circle")),
                 ("free", "a cat on a mat", "", [["how many objects are there?", "two"]]))}
    scores = pd.DataFrame([{"generation_id": g, "spec_id": g.split(":")[0], "reward": r, "q_spec": 0.6,
                            "contradiction": 0.0}
                           for g, r in (("pos:g0", 0.9), ("pos:g1", 0.5), ("pos:g2", 0.99), ("own:g0", 0.8),
                                        ("free:g0", 0.5))])
    verdicts = {"pos:g0": "match", "pos:g1": "match", "pos:g2": "mismatch", "own:g0": "unnamed-tile"}
    decisions, examples = [], []
    _tile_verified_generation(0, scores, specs, verdicts, FilterConfig(check_label_reward=float("inf")),
                              decisions, examples)
    assert {d["item_id"]: (d["kept"], d["reason"]) for d in decisions} == {
        "pos:g0": (True, "tile-match"), "pos:g1": (False, "not-best-match"), "pos:g2": (False, "tile-mismatch"),
        "own:g0": (False, "tile-unnamed"), "free:g0": (False, "low-reward")}
    # The prompt outside the grammar fell back to the Solver's checks (it has none, so its fidelity gate decides).
    assert [(e["role"], e["source_id"], e["weight"]) for e in examples] == [("generator", "pos:g0", 1.0)]


def test_images_that_are_not_tiled_scenes_are_refused_before_anything_is_written(asg_home, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(6):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{k}.png")
    ingest_source(str(folder), image_size=32)
    with pytest.raises(ValueError, match=r"not tiled scenes .* use another preset"):
        compose_scenes.fn(0, str(SHIPPED_BASE), str(folder), 6)
    db = connect(Settings.from_env())
    assert read(db, "compositions").empty and read(db, "tile_names").empty


@pytest.mark.usefixtures("prefect_server")
def test_a_compose_round_trains_the_solver_on_recomposed_scenes_only(asg_home):
    from flows.round import RoundConfig, round_flow

    config = RoundConfig(source="world://unlabeled?n=16&seed=5", n_images=16, n_candidates=2, n_samples=3,
                         n_per_prompt=2, n_check_answers=2, finetune_steps={"solver": 3, "proposer": 2, "generator": 3},
                         batch_size=8, seed_scenes=20, evaluation="none", accept_reward=0.3, preset="compose",
                         targeted_share=0.25, targeted_per_prompt=3)
    result = round_flow(0, str(SHIPPED_BASE), config)
    db = connect(Settings.from_env())
    tiles, comps = read(db, "tile_names"), read(db, "compositions")
    # The compose stage names the pool's tiles; the tile-verify stage adds those only generated images show.
    assert len(tiles) == result["compose.tiles_distinct"] + result["tile-verify.tiles_new"]
    assert result["compose.tiles_distinct"] > 0
    assert len(comps) == result["compose.compositions"] == 2 * comps["image_id"].nunique() > 0
    solver = read(db, "training_examples", where="role = 'solver'")
    assert set(solver["image_table"]) == {"compositions"}  # no majority label of a pool image
    n_questions = sum(len(json.loads(q)) for q in comps["questions_json"])
    assert (solver["kind"] == "vqa").sum() == n_questions and (solver["kind"] == "caption").sum() == len(comps)
    assert result["finetune.solver_examples"] == len(solver)
    # The audit judges the composed labels against the hidden scenes; they beat the Solver's own answers.
    assert result["diagnose.audit.all.composition.items"] == n_questions
    assert result["diagnose.audit.all.composition.label_accuracy"] > result[
        "diagnose.audit.all.composition.greedy_accuracy"]
    assert result["diagnose.solver_target_accuracy"] >= 0.85
    # Targeted specs: drawn best-of-3 with no source image, never written up as the Proposer's own specs.
    specs, gens = read(db, "specs"), read(db, "generations")
    targeted = specs[specs["accept_reason"] == "targeted"]
    assert len(targeted) == result["generate.targeted_specs"] == 4 and (targeted["image_id"] == "").all()
    assert gens["spec_id"].isin(targeted["spec_id"]).sum() == 4 * 3
    proposer = read(db, "training_examples", where="role = 'proposer' AND kind = 'spec'")
    assert not proposer["source_id"].isin(targeted["spec_id"]).any()
    # Every generated image is read tile by tile; the Generator imitates at most one tile-matched image per spec,
    # and only images whose tiles match their prompt (or, for prompts outside the grammar, the Solver's checks).
    verdicts = read(db, "tile_verdicts")
    assert sorted(verdicts["generation_id"]) == sorted(gens["generation_id"])
    assert result["tile-verify.generations"] == len(gens)
    generator = read(db, "training_examples", where="role = 'generator'")
    verdict_of = dict(zip(verdicts["generation_id"], verdicts["verdict"]))
    assert all(verdict_of[g] in ("match", "not-in-grammar") for g in generator["source_id"])
    matched = generator[generator["source_id"].map(verdict_of) == "match"]
    assert matched["source_id"].str.split(":g").str[0].is_unique
    assert result["tile-verify.specs_with_match"] >= len(matched)
    decisions = read(db, "filter_decisions", where="item_kind = 'generation'")
    assert set(decisions["item_id"]) == set(gens["generation_id"])
    # Rerunning the round leaves the same rows (keys are deterministic).
    round_flow(0, str(SHIPPED_BASE), config)
    again = read(db, "compositions")
    assert sorted(again["composition_id"]) == sorted(comps["composition_id"])
    assert sorted(read(db, "tile_names")["tile_id"]) == sorted(tiles["tile_id"])
    assert read(db, "tile_verdicts").sort_values("generation_id").reset_index(drop=True).equals(
        verdicts.sort_values("generation_id").reset_index(drop=True))


@pytest.mark.usefixtures("prefect_server")
def test_the_compose_gold_ceiling_trains_composes_own_items_on_true_labels(asg_home):
    """Not a method: compose's recomposed scenes with the oracle's answers on the moved true scenes, and the images
    drawn for its specs that the world's parser finds correct."""
    from flows.round import RoundConfig, round_flow
    from tasks.gold_labels import composed_truths, correct_generations

    config = RoundConfig(source="world://unlabeled?n=16&seed=5", n_images=16, n_candidates=2, n_samples=3,
                         n_per_prompt=2, n_check_answers=2, finetune_steps={"solver": 3, "proposer": 2, "generator": 3},
                         batch_size=8, seed_scenes=20, evaluation="none", accept_reward=0.3,
                         preset="compose-gold-ceiling", targeted_share=0.25, targeted_per_prompt=3)
    result = round_flow(0, str(SHIPPED_BASE), config)
    db = connect(Settings.from_env())
    comps = read(db, "compositions")
    assert len(comps) > 0 and read(db, "tile_verdicts").empty  # no tile reading: the parser judges the images
    truths = composed_truths(db, comps)
    expected = {}
    for row in comps.itertuples():
        scene = truths[row.composition_id]
        pairs = [(q, language.oracle_answer(scene, q)) for q, _, _ in json.loads(row.questions_json)]
        expected.update({(row.composition_id, q): a for q, a in pairs if a is not None})
        expected[(row.composition_id, "")] = language.caption(scene)
    solver = read(db, "training_examples", where="role = 'solver'")
    assert set(solver["image_table"]) == {"compositions"}
    assert {(r.image_key, r.prompt): r.target for r in solver.itertuples()} == expected
    assert result["diagnose.solver_target_accuracy"] == 1.0
    # One truly correct image per spec at most trains the Generator, and only truly correct ones.
    correct = correct_generations(db, 0)
    generator = read(db, "training_examples", where="role = 'generator'")
    assert len(generator) > 0 and all(correct[g] for g in generator["source_id"])
    assert generator["source_id"].str.split(":g").str[0].is_unique
    assert result["diagnose.generator_target_accuracy"] == 1.0


@pytest.mark.usefixtures("prefect_server")
def test_tile_corrections_fix_specs_no_sample_matched_with_the_solvers_named_tiles(asg_home):
    from flows.round import RoundConfig, round_flow
    from tasks.logic.tile_verdicts import PerceivedObject, tile_verdict

    config = RoundConfig(source="world://unlabeled?n=16&seed=5", n_images=16, n_candidates=2, n_samples=3,
                         n_per_prompt=2, n_check_answers=2, finetune_steps={"solver": 2, "proposer": 2, "generator": 3},
                         batch_size=8, seed_scenes=20, evaluation="none", accept_reward=0.3, preset="compose",
                         targeted_share=1.0, targeted_per_prompt=2, tile_corrections=True)
    result = round_flow(0, str(SHIPPED_BASE), config)
    db = connect(Settings.from_env())
    fixes, verdicts = read(db, "tile_corrections"), read(db, "tile_verdicts")
    gens = read(db, "generations").set_index("generation_id")
    assert len(fixes) == result["tile-verify.specs_corrected"] > 0
    matched = set(verdicts.loc[verdicts["verdict"] == "match", "spec_id"])
    assert not set(fixes["spec_id"]) & matched  # only specs no sample matched
    names = {r.tile_key: (r.color, r.shape) for r in read(db, "tile_names").itertuples() if r.named}
    for fix in fixes.itertuples():
        source = gens.loc[fix.generation_id]
        assert fix.spec_id == source["spec_id"] and fix.prompt == source["prompt"]
        objects = [PerceivedObject(c, s, cell) for c, s, cell in json.loads(fix.objects_json)]
        assert tile_verdict(fix.prompt, objects, GRID) == "match"
        before = split_tiles(decode_png(source["png"]), GRID)
        after = split_tiles(decode_png(fix.png), GRID)
        changed = [k for k in range(GRID * GRID) if not np.array_equal(before[k], after[k])]
        assert changed == json.loads(fix.changed_cells_json) and changed  # the sample's other cells are kept
        assert all(names[tile_key(after[o.cell])] == (o.color, o.shape) for o in objects)
    generator = read(db, "training_examples", where="role = 'generator' AND image_table = 'tile_corrections'")
    kept = read(db, "filter_decisions", where="item_kind = 'correction' AND kept = true")
    assert sorted(generator["image_key"]) == sorted(kept["item_id"]) and len(kept) == result["filter.corrections_kept"]
    assert set(generator["image_key"]) <= set(fixes["correction_id"]) and len(generator) > 0
    # Evaluation only: the parser judges the corrected images the Generator imitated.
    assert result["diagnose.tile_corrections_trained"] == len(generator)
    assert 0 <= result["diagnose.tile_correction_accuracy"] <= 1


@pytest.mark.usefixtures("prefect_server")
def test_a_compose_round_on_the_flow_base_updates_the_generator_on_its_preference_pairs(asg_home):
    """On a denoising generator compose's Generator update is the preference update (FinetuneConfig's
    generator_update "auto"): every pair is one spec's tile-matched sample beside a mismatched one, only the
    denoiser's Generator adapter moves; a preset without tile verdicts refuses the preference update."""
    from flows.round import RoundConfig, round_flow
    from models.registry import load_backbone
    from tasks.logic.preference_pairs import preference_pairs
    from tasks.logic.stage_seeds import stage_seed

    flow_base = SHIPPED_BASE.parent / "shapes-flow-base"
    config = RoundConfig(source="world://unlabeled?n=8&seed=5", n_images=8, n_candidates=2, n_samples=2,
                         n_per_prompt=3, n_check_answers=2, finetune_steps={"generator": 2}, batch_size=8,
                         seed_scenes=20, evaluation="none", accept_reward=0.3, preset="compose",
                         mode="generation", targeted_share=1.0, targeted_per_prompt=4)
    result = round_flow(0, str(flow_base), config)
    db = connect(Settings.from_env())
    verdicts = read(db, "tile_verdicts")
    pairs = preference_pairs(list(verdicts[["generation_id", "spec_id", "verdict"]].itertuples(index=False,
                                                                                              name=None)),
                             stage_seed("finetune", 0, 0, "generator"))
    assert result["finetune.generator_preference"] == 1.0
    assert result["finetune.generator_pairs"] == len(pairs) > 0
    verdict_of = dict(zip(verdicts["generation_id"], verdicts["verdict"]))
    assert all(verdict_of[c] == "match" and verdict_of[r] == "mismatch" and c.split(":g")[0] == r.split(":g")[0]
               for c, r in pairs)
    assert 0.0 < result["finetune.generator_loss_first"] < 1.0  # log 2 at the first step (policy = reference)
    # The diagnose stage (evaluation only) judges the pairs' samples with the hidden scenes.
    from tasks.gold_labels import correct_generations

    truth = correct_generations(db, 0)
    chosen, rejected = sorted({c for c, _ in pairs}), sorted({r for _, r in pairs})
    assert result["diagnose.preference_samples"] == len(chosen) + len(rejected)
    assert result["diagnose.preference_chosen_correct"] == pytest.approx(np.mean([truth[g] for g in chosen]))
    assert result["diagnose.preference_rejected_wrong"] == pytest.approx(np.mean([not truth[g] for g in rejected]))
    base, after = load_backbone(flow_base), load_backbone(asg_home / "objects" / "checkpoints" / "round-0")
    base.attach_roles()
    moved = {n for n, p in after.network.named_parameters()
             if n in dict(base.network.named_parameters()) and not torch.equal(p, dict(base.network.named_parameters())[n])}
    assert moved and all(".generator." in n and n.startswith("denoiser.") for n in moved)
    with pytest.raises(ValueError, match="generator_update 'preference' needs tile verdicts"):
        config.updated(preset="verified", generator_update="preference")
