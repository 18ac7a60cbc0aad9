"""The typed parameters of each stage of a round: one section of `RoundConfig` (flows/round_config.py) per stage,
passed whole to the stage that uses it. Plain data with help text on every field; frozen, and unknown fields
are refused, so a misspelt parameter fails instead of being ignored.

    >>> SolveConfig(n_samples=5).n_samples
    5
    >>> try:
    ...     SolveConfig(n_sample=5)
    ... except ValueError as error:
    ...     print(str(error).splitlines()[1:3])
    ['n_sample', '  Extra inputs are not permitted [type=extra_forbidden, input_value=5, input_type=int]']
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from world.prompts import CATEGORIES


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IngestConfig(_Section):
    image_size: int = Field(32, ge=8, description="backbone input size images are resized to")


class ProposeConfig(_Section):
    n_candidates: int = Field(3, ge=1, description="K candidate questions per image")
    temperature: float = Field(1.0, gt=0, description="Proposer sampling temperature")
    use_ste: bool = Field(True, description="ablation: off selects the first well-formed candidate, not by STE")
    ste_aggregate: Literal["max", "mean"] = Field("max", description="ablation: mean instead of max STE")


class SolveConfig(_Section):
    n_samples: int = Field(7, ge=1, description="N Solver answers per question")
    use_framings: bool = Field(True, description="ablation: off answers every sample under the canonical framing")


class ComposeConfig(_Section):
    per_image: int = Field(2, ge=1, description="compose preset: recomposed scenes per unlabeled image")
    relation_questions: int = Field(0, ge=0, description="compose preset: extra relation questions per recomposed "
                                                         "scene (beside 8 over all families)")


class GenerateConfig(_Section):
    n_per_prompt: int = Field(3, ge=1, description="L generated images per spec")
    temperature: float = Field(1.0, gt=0, description="Generator sampling temperature (also of the cross-check's "
                                                      "caption-drawn view)")
    targeted_share: float = Field(1.0, ge=0, description="compose preset: extra specs aimed at the weakest GenEval "
                                  "categories, per round image (1.0: 1,000 for 1,000 images), drawn best-of-"
                                  "`targeted_per_prompt`")
    targeted_per_prompt: int = Field(8, ge=1, description="compose preset: samples per targeted spec")
    # Chosen on the validation split (benchmarks/compose_variants.py, 1 round, seed 0): colour attribution four
    # times in eight and share 1.0 gave GenEval-2D 0.829 and colour attribution 0.369, against 0.817 / 0.287 for the
    # earlier (color_attr, position, counting, color_attr, two_object, position) at 0.6; fewer position specs
    # than 200 per round cost position 9 points.
    targeted_categories: tuple[str, ...] = Field(
        ("color_attr", "position", "counting", "color_attr", "two_object", "position", "color_attr", "color_attr"),
        min_length=1, description="compose preset: the GenEval categories the targeted specs cycle over, in order "
                                  "(a category named twice gets twice the specs)")

    tile_corrections: bool = Field(False, description="compose preset: a spec none of whose samples its tiles show "
                                   "to match gets its closest sample corrected with tiles the Solver named as the "
                                   "prompt asks (tasks/logic/tile_corrections.py), and the Generator imitates that")

    @field_validator("targeted_categories")
    @classmethod
    def _known_categories(cls, categories: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [c for c in categories if c not in CATEGORIES]
        if unknown:
            raise ValueError(f"unknown GenEval category {unknown[0]!r}; categories are {', '.join(CATEGORIES)}")
        return categories


class ScoreConfig(_Section):
    n_answers: int = Field(3, ge=1, description="Solver answers per check when scoring an image")
    use_fidelity: bool = Field(True, description="ablation: leave QA fidelity out of R_g")
    use_cycle: bool = Field(True, description="ablation: leave cycle consistency out of R_g")


class FilterConfig(_Section):
    """Which self-generated items become training examples (tasks/logic/filtering.py applies it)."""

    min_majority_fraction: float = Field(0.4, ge=0, le=1, description="verified preset: below this majority share "
                                                                      "a medium/hard label is too noisy to imitate")
    accept_reward: float = Field(0.7, ge=0, le=1, description="R_g at which a generated image counts as accepted")
    min_q_spec: float = Field(0.35, ge=0, le=1, description="METHOD.md: the Generator learns from a spec only if "
                                                            "its Q_spec reaches this")
    check_label_reward: float = Field(0.7, ge=0, description="verified preset: R_g at which a generated image's "
                                      "checks (question, the spec's answer) become Solver examples; below "
                                      "`accept_reward` the Generator's intent corrects the Solver; inf: never")
    max_check_contradiction: float = Field(1.0, ge=0, le=1, description="verified preset: most share of those "
                                           "checks the Solver's answers may contradict")


class FinetuneConfig(_Section):
    steps: dict[str, int] | None = Field(
        None, description="update steps per role; unset: the preset's default (compose and gold-ceiling "
                          "480/240/480, paper, verified and agreement 120/60/120; see tasks/logic/presets.py)")
    lr: float = Field(1e-3, gt=0, description="peak LoRA learning rate of the imitation presets")
    policy_lr: float = Field(1e-4, gt=0, description="LoRA learning rate of the paper preset's policy updates")
    batch_size: int = Field(64, ge=1, description="examples per update step")
    replay_fraction: float = Field(0.5, ge=0, le=1, description="share of each batch replayed from the seed set")
    seed_scenes: int = Field(300, ge=1, description="seed set size used for replay (same as pretraining)")
    seed_set_seed: int = Field(0, description="seed of the labeled seed set the base was pretrained on; replay and "
                                              "the matched control use exactly that set, whatever `seed` is")
    processes: int = Field(1, ge=1, description="data-parallel ranks (torchrun; gloo on CPU, NCCL with one GPU "
                                                "per rank)")
    generator_update: Literal["auto", "imitation", "preference"] = Field(
        "auto", description="the Generator's update in the imitation presets: imitation of its verified images, or "
                            "preference (Diffusion-DPO on pairs of one spec's samples its tile reading matched and "
                            "did not match; needs the compose preset's tile verdicts); auto: preference for a "
                            "denoising generator (flow, diffusion) under compose, imitation otherwise")
    preference_beta: float = Field(200.0, gt=0, description="preference update's beta (the denoising error's "
                                                            "differences between policy and reference are ~1e-3)")
    preference_reference: Literal["base", "start"] = Field(
        "start", description="preference update's reference: the Generator's adapter as the round found it (each "
                             "round a step away from the previous round's Generator; flow base, validation, round 2: "
                             "0.803 -> 0.817 GenEval-2D, against 0.790 with the base), or the base (adapters off)")


class EvaluateConfig(_Section):
    kind: Literal["default", "tiny", "none"] = Field("default", description="held-out sets of the default size, "
                                                                            "tiny ones (smoke runs), or none")
    seed: int = Field(0, description="seed of the held-out sets; fixed so every arm and round is comparable")
    split: Literal["eval", "validation"] = Field(
        "eval", description="held-out split the round is scored on: validation for choices, eval for reported numbers")
    diagnose: bool = Field(True, description="judge the round's own labels and rewards with the embedded world's "
                                             "hidden scenes (evaluation only, like the held-out sets); off skips "
                                             "the diagnose stage")
