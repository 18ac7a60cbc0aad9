"""The parameters of a round: `RoundConfig`, one typed section per stage plus the round-wide choices.

It is the round, nightly and demo flows' parameter schema (the Prefect UI renders each section) and is logged to
MLflow as dotted names (`solve.n_samples`, `finetune.lr`, `dotted_params`). Sections are passed whole to the
stages that use them. The flat names of the command line and of older callers are accepted as well and land in
their section (`FLAT_NAMES`), so both spell the same config:

    >>> RoundConfig(n_samples=3).solve.n_samples == RoundConfig(solve={"n_samples": 3}).solve.n_samples == 3
    True
    >>> RoundConfig(preset="paper").updated(use_ste=False, evaluation="tiny").propose.use_ste
    False
    >>> dotted_params(RoundConfig())["score.n_answers"]
    3
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from storage.settings import refuse_credentials
from tasks.logic.held_out_evaluation import EvalConfig
from tasks.logic.presets import generator_update, role_steps
from tasks.logic.stage_configs import (
    ComposeConfig,
    EvaluateConfig,
    FilterConfig,
    FinetuneConfig,
    GenerateConfig,
    IngestConfig,
    ProposeConfig,
    ScoreConfig,
    SolveConfig,
)


# The flat names (command line, nightly presets, ablations) and where each lands.
FLAT_NAMES: dict[str, tuple[tuple[str, str], ...]] = {
    "image_size": (("ingest", "image_size"),),
    "n_candidates": (("propose", "n_candidates"),), "use_ste": (("propose", "use_ste"),),
    "ste_aggregate": (("propose", "ste_aggregate"),),
    "temperature": (("propose", "temperature"), ("generate", "temperature")),
    "n_samples": (("solve", "n_samples"),), "use_framings": (("solve", "use_framings"),),
    "compose_per_image": (("compose", "per_image"),),
    "compose_relation_questions": (("compose", "relation_questions"),),
    "n_per_prompt": (("generate", "n_per_prompt"),), "targeted_share": (("generate", "targeted_share"),),
    "targeted_per_prompt": (("generate", "targeted_per_prompt"),),
    "targeted_categories": (("generate", "targeted_categories"),),
    "tile_corrections": (("generate", "tile_corrections"),),
    "n_check_answers": (("score", "n_answers"),), "use_fidelity": (("score", "use_fidelity"),),
    "use_cycle": (("score", "use_cycle"),),
    **{name: (("filter", name),) for name in FilterConfig.model_fields},
    "finetune_steps": (("finetune", "steps"),), "finetune_processes": (("finetune", "processes"),),
    **{name: (("finetune", name),) for name in ("lr", "policy_lr", "batch_size", "replay_fraction", "seed_scenes",
                                                "seed_set_seed", "generator_update", "preference_beta",
                                                "preference_reference")},
    "evaluation": (("evaluate", "kind"),), "eval_seed": (("evaluate", "seed"),), "eval_split": (("evaluate", "split"),),
    "diagnose": (("evaluate", "diagnose"),),
}


class RoundConfig(BaseModel):
    """Parameters of a round (the deployment's parameter schema): what it reads and which recipe, then one section
    per stage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field("world://unlabeled?n=1000&seed=0", description="unlabeled images: world://… or a folder URL")
    n_images: int = Field(1000, ge=1, description="images sampled from the source for this round")
    preset: Literal["paper", "verified", "agreement", "compose", "gold-ceiling", "compose-gold-ceiling"] = Field(
        "compose", description="compose (default, the best recipe measured here): the Solver learns scenes "
                               "recomposed from the tiles it named (labels known by construction), the Generator the "
                               "best tile-verified image of each spec, with seed replay; paper: METHOD.md's rewards "
                               "and RL updates, exactly as written; verified: imitation of confident and "
                               "Solver-verified items with seed replay; agreement: imitation of majority labels that "
                               "the mirrored-image and caption-drawn views confirm, with seed replay; gold-ceiling: "
                               "NOT a method, the same items with the world's true labels (the ceiling of any source); "
                               "compose-gold-ceiling: NOT a method, compose's own items with the world's true labels")
    mode: Literal["joint", "understanding", "generation"] = Field(
        "joint", description="ablation: collect and train only the understanding or only the generation side")
    seed: int = Field(0, description="seed of the round's sampling (every stage's seed derives from it and the round)")
    shards: int = Field(1, ge=1, description="shards per rollout stage (ingest, propose, solve, cross-check, generate, "
                                             "score); they run on the flow's task runner, see flows/task_runners.py")
    ingest: IngestConfig = Field(default_factory=IngestConfig, description="ingest stage")
    propose: ProposeConfig = Field(default_factory=ProposeConfig, description="propose stage")
    solve: SolveConfig = Field(default_factory=SolveConfig, description="solve-and-vote stage")
    compose: ComposeConfig = Field(default_factory=ComposeConfig, description="compose stage (compose preset)")
    generate: GenerateConfig = Field(default_factory=GenerateConfig, description="generate stage")
    score: ScoreConfig = Field(default_factory=ScoreConfig, description="score stage")
    filter: FilterConfig = Field(default_factory=FilterConfig, description="filter stage")
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig, description="fine-tune stage")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="evaluate stage")

    @field_validator("source")
    @classmethod
    def _no_credentials_in_source(cls, value: str) -> str:
        return refuse_credentials(value)  # the source is stored as a flow parameter and an MLflow param

    @model_validator(mode="before")
    @classmethod
    def _flat_names_into_sections(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not FLAT_NAMES.keys() & data.keys():
            return data
        data = dict(data)
        for name in FLAT_NAMES.keys() & data.keys():
            value = data.pop(name)
            for section, field in FLAT_NAMES[name]:
                current = data.get(section) or {}
                current = current.model_dump() if isinstance(current, BaseModel) else dict(current)
                data[section] = {**current, field: value}
        return data

    @model_validator(mode="after")
    def _generator_update_fits_the_preset(self) -> "RoundConfig":
        generator_update(self.preset, self.finetune.generator_update, "flow")  # raises for a preset without pairs
        return self

    def updated(self, **changes: Any) -> "RoundConfig":
        """A copy with `changes` (flat names, section names or top-level fields), validated like a new config."""
        data = self.model_dump()
        for name, value in changes.items():
            if name in type(self).model_fields and isinstance(value, dict) and isinstance(data.get(name), dict):
                data[name] = {**data[name], **value}
            elif name in FLAT_NAMES:
                for section, field in FLAT_NAMES[name]:
                    data[section] = {**data[section], field: value}
            else:
                data[name] = value
        return type(self).model_validate(data)

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> "RoundConfig":
        """Validated, unlike pydantic's: a flat name in `update` lands in its section instead of nowhere."""
        return self.updated(**update) if update else super().model_copy(deep=deep)

    def role_steps(self) -> dict[str, int]:
        """The update steps per role this round takes (the preset's default unless `finetune.steps` is set)."""
        return role_steps(self.preset, self.finetune.steps)

    def eval_config(self) -> EvalConfig:
        if self.evaluate.kind == "tiny":
            return replace(EvalConfig.tiny(), split=self.evaluate.split)
        return EvalConfig(seed=self.evaluate.seed, split=self.evaluate.split)


def dotted_params(config: RoundConfig) -> dict[str, Any]:
    """The config as MLflow params: `section.field` names, the fine-tune steps resolved from the preset."""
    out: dict[str, Any] = {}
    for name, value in config.model_dump().items():
        if isinstance(value, dict) and name in RoundConfig.model_fields and name != "source":
            out.update({f"{name}.{k}": v for k, v in value.items()})
        else:
            out[name] = value
    out["finetune.steps"] = config.role_steps()
    return out
