"""RoundConfig: one typed section per stage, help text on every field, the flat names of the command line landing
in their sections, validated copies, the deployment's parameter schema and MLflow's dotted params."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from flows.round import round_flow
from flows.round_config import FLAT_NAMES, RoundConfig, dotted_params


def _models(model: type[BaseModel]):
    yield model
    for field in model.model_fields.values():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _models(field.annotation)


def test_every_field_of_every_section_has_help_text():
    missing = [f"{m.__name__}.{name}" for m in _models(RoundConfig) for name, f in m.model_fields.items()
               if not f.description]
    assert not missing
    sections = [name for name, f in RoundConfig.model_fields.items() if isinstance(f.annotation, type)
                and issubclass(f.annotation, BaseModel)]
    assert sections == ["ingest", "propose", "solve", "compose", "generate", "score", "filter", "finetune", "evaluate"]


def test_each_flat_name_lands_in_its_section_and_equals_the_nested_spelling():
    values = {"image_size": 16, "n_candidates": 5, "use_ste": False, "ste_aggregate": "mean", "temperature": 0.5,
              "n_samples": 4, "use_framings": False, "compose_per_image": 3, "compose_relation_questions": 2,
              "n_per_prompt": 5, "targeted_share": 0.1, "targeted_per_prompt": 4,
              "targeted_categories": ("counting", "color_attr"), "tile_corrections": True,
              "n_check_answers": 5,
              "use_fidelity": False, "use_cycle": False, "min_majority_fraction": 0.3, "accept_reward": 0.6,
              "min_q_spec": 0.2, "check_label_reward": 0.5, "max_check_contradiction": 0.5,
              "finetune_steps": {"solver": 1}, "finetune_processes": 2, "lr": 0.01, "policy_lr": 0.02,
              "batch_size": 4, "replay_fraction": 0.25, "seed_scenes": 30, "seed_set_seed": 3, "evaluation": "tiny",
              "eval_seed": 5, "eval_split": "validation", "diagnose": False, "generator_update": "imitation",
              "preference_beta": 50.0, "preference_reference": "base"}
    assert set(values) == set(FLAT_NAMES)
    config = RoundConfig(**values)
    for name, value in values.items():
        for section, field in FLAT_NAMES[name]:
            assert getattr(getattr(config, section), field) == value, name
    nested = {}
    for name, value in values.items():
        for section, field in FLAT_NAMES[name]:
            nested.setdefault(section, {})[field] = value
    assert RoundConfig(**nested) == config
    assert RoundConfig().updated(**values) == config


def test_copies_are_validated_and_a_misspelt_name_is_refused():
    config = RoundConfig(n_samples=3)
    copy = config.model_copy(update={"evaluation": "none", "solve": {"use_framings": False}})
    assert (copy.evaluate.kind, copy.solve.n_samples, copy.solve.use_framings) == ("none", 3, False)
    assert config.evaluate.kind == "default"  # the original is untouched (and frozen)
    with pytest.raises(ValidationError, match="n_sampels"):
        RoundConfig(n_sampels=3)
    with pytest.raises(ValidationError, match="n_sample"):
        config.model_copy(update={"solve": {"n_sample": 2}})
    with pytest.raises(ValidationError):
        config.solve.n_samples = 2


def test_mlflow_params_are_dotted_and_the_deployment_schema_has_every_section():
    params = dotted_params(RoundConfig(preset="paper", n_samples=5))
    assert params["solve.n_samples"] == 5 and params["preset"] == "paper"
    assert params["finetune.steps"] == {"solver": 120, "proposer": 60, "generator": 120}  # resolved from the preset
    assert not any(isinstance(v, dict) for k, v in params.items() if k != "finetune.steps")
    schema = round_flow.parameters.model_dump()
    definitions = schema["definitions"]
    assert definitions["SolveConfig"]["properties"]["n_samples"]["description"] == "N Solver answers per question"
    assert set(definitions["RoundConfig"]["properties"]) >= {"ingest", "solve", "filter", "finetune", "evaluate"}
