"""The presets as data: every name the round accepts has a recipe, and a round's update steps resolve from it."""

import typing

import pytest

from flows.cli import PRESET_ARM_NAMES
from flows.experiment import _size
from flows.round import RoundConfig
from tasks.filter import filter_examples
from tasks.logic.presets import BASE_STEPS, RECIPES, recipe_of, role_steps


def test_every_preset_the_round_accepts_has_a_recipe_and_nothing_more():
    accepted = typing.get_args(RoundConfig.model_fields["preset"].annotation)
    assert set(accepted) == set(RECIPES) == set(PRESET_ARM_NAMES)


def test_only_the_paper_preset_takes_policy_updates_and_only_compose_and_its_ceiling_add_stages():
    assert [r.name for r in RECIPES.values() if r.update == "policy"] == ["paper"]
    assert [r.name for r in RECIPES.values() if r.composes_scenes or r.verifies_tiles
            or r.targets_weak_categories] == ["compose", "compose-gold-ceiling"]
    assert [r.name for r in RECIPES.values() if r.verifies_tiles] == ["compose"]  # the ceiling's judge is the parser


def test_the_ceilings_are_named_as_such_and_never_count_as_methods():
    from tasks.logic.experiment_targets import EVOLVING_ARMS, GOLD_ARMS

    assert GOLD_ARMS == ("gold-ceiling", "compose-gold-ceiling")
    assert all(name.endswith("gold-ceiling") for name in GOLD_ARMS) and not set(GOLD_ARMS) & set(EVOLVING_ARMS)
    assert set(EVOLVING_ARMS) | set(GOLD_ARMS) == set(RECIPES)
    assert recipe_of("compose-gold-ceiling").finetune_steps == recipe_of("compose").finetune_steps


def test_a_round_takes_its_presets_default_steps_unless_they_are_set():
    assert RoundConfig().preset == "compose"
    assert RoundConfig().role_steps() == {"solver": 480, "proposer": 240, "generator": 480}
    assert RoundConfig(preset="paper").role_steps() == dict(BASE_STEPS) == {"solver": 120, "proposer": 60,
                                                                              "generator": 120}
    assert RoundConfig(preset="gold-ceiling").role_steps() == RoundConfig().role_steps()
    assert RoundConfig(finetune_steps={"solver": 7, "proposer": 0, "generator": 1}).role_steps() == {
        "solver": 7, "proposer": 0, "generator": 1}
    assert role_steps("verified", None) == dict(BASE_STEPS)


def test_the_experiment_gives_every_arm_and_the_control_the_same_steps():
    # The default experiment size is the compose preset's own default; a paper arm in it takes those steps too.
    assert _size(False, 0, 3).finetune.steps == recipe_of("compose").finetune_steps
    assert _size(False, 0, 3, steps_scale=1).finetune.steps == dict(BASE_STEPS)
    assert _size(False, 1, 3).model_copy(update={"preset": "paper"}).role_steps() == recipe_of(
        "compose").finetune_steps


def test_an_unknown_preset_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown preset 'best'; presets are paper, verified"):
        recipe_of("best")
    with pytest.raises(ValueError, match="unknown preset 'best'"):
        filter_examples.fn(0, preset="best")  # before the stage reads or writes anything
