"""The round's presets as data: which extra stages each one runs, how it updates the roles, and its default update
steps. The round flow and the fine-tune stage read a preset's recipe instead of branching on its name.

    >>> recipe_of("compose").finetune_steps["solver"], recipe_of("paper").update
    (480, 'policy')
    >>> role_steps("paper", None)
    {'solver': 120, 'proposer': 60, 'generator': 120}
    >>> role_steps("compose", {"solver": 5})
    {'solver': 5}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

# One round's update steps per role at the sizes the first presets were measured at (3 understanding : 2 generation).
BASE_STEPS: Mapping[str, int] = {"solver": 120, "proposer": 60, "generator": 120}


def scaled_steps(scale: float, steps: Mapping[str, int] = BASE_STEPS) -> dict[str, int]:
    """`steps` times `scale`, rounded per role.

    >>> scaled_steps(2.5)
    {'solver': 300, 'proposer': 150, 'generator': 300}
    """
    return {role: round(n * scale) for role, n in steps.items()}


@dataclass(frozen=True)
class Recipe:
    """What a preset adds to the round and how it trains."""

    name: str
    update: Literal["policy", "imitation"]  # policy: METHOD.md's RL updates at policy_lr; imitation: at lr
    composes_scenes: bool  # runs the compose stage (scenes recomposed from the tiles the Solver named)
    targets_weak_categories: bool  # adds specs aimed at the weakest GenEval categories
    verifies_tiles: bool  # runs the tile-verify stage over generated images
    solver_labels: Literal["policy", "verified", "agreement", "composed", "gold", "composed-gold"]  # where Solver items come from
    generator_labels: Literal["policy", "verified", "tile-verified", "gold"]  # which generated images train
    checks_teach_solver: bool  # accepted images' checks become Solver labels (GenEval-grammar scenes are simpler
    # than real ones: measured to hurt counting, so only the verified preset keeps them)
    finetune_steps: Mapping[str, int]  # default update steps per role (a round config's `finetune.steps` overrides)

    @property
    def is_ceiling(self) -> bool:
        """True when the world's true labels train a role: a gold-label ceiling, never a method."""
        return self.solver_labels in ("gold", "composed-gold") or self.generator_labels == "gold"


# paper, verified and agreement were measured at 1x steps; compose gains on the Generator only from about 4x
# (one round at 1x: GenEval-2D -0.3, at 4x: +1.9 to +2.8, README), and the gold-label ceiling is compared with it.
RECIPES: Mapping[str, Recipe] = {
    "paper": Recipe("paper", "policy", False, False, False, "policy", "policy", False, dict(BASE_STEPS)),
    "verified": Recipe("verified", "imitation", False, False, False, "verified", "verified", True, dict(BASE_STEPS)),
    "agreement": Recipe("agreement", "imitation", False, False, False, "agreement", "verified", False,
                        dict(BASE_STEPS)),
    "compose": Recipe("compose", "imitation", True, True, True, "composed", "tile-verified", False, scaled_steps(4)),
    # NOT a method: the same items with the world's true labels (evaluation's ceiling of any label source)
    "gold-ceiling": Recipe("gold-ceiling", "imitation", False, False, False, "gold", "gold", False, scaled_steps(4)),
    # NOT a method: compose's own items (its recomposed scenes, the images drawn for its specs and targeted specs)
    # with the world's true labels, so the ceiling bounds compose too (the items of gold-ceiling are the Proposer's)
    "compose-gold-ceiling": Recipe("compose-gold-ceiling", "imitation", True, True, False, "composed-gold", "gold",
                                   False, scaled_steps(4)),
}
# The ceilings: a recipe's items with the world's true labels (evaluation's bound, never a method).
CEILING_PRESETS: tuple[str, ...] = tuple(name for name, r in RECIPES.items() if r.is_ceiling)


def recipe_of(preset: str) -> Recipe:
    """The recipe of `preset`; an unknown name is one clear error.

    >>> recipe_of("best")
    Traceback (most recent call last):
    ...
    ValueError: unknown preset 'best'; presets are paper, verified, agreement, compose, gold-ceiling, compose-gold-ceiling
    """
    if preset not in RECIPES:
        raise ValueError(f"unknown preset {preset!r}; presets are {', '.join(RECIPES)}")
    return RECIPES[preset]


def role_steps(preset: str, override: Mapping[str, int] | None) -> dict[str, int]:
    """The update steps per role a round of `preset` takes: `override` when given, else the preset's default."""
    return dict(override) if override is not None else dict(recipe_of(preset).finetune_steps)


DENOISING_PARADIGMS = ("flow", "diffusion")


def generator_update(preset: str, choice: str, paradigm: str) -> str:
    """How the round updates the Generator: "policy" (the paper preset's RL update), "imitation" of its verified
    images, or "preference" pairs of one spec's matched and mismatched samples (models/preference_training.py).
    `choice` is the fine-tune config's `generator_update`; `paradigm` the backbone's generator paradigm.

    "auto" takes the preference update where it was measured to help: a denoising generator under a preset that
    verifies tiles (flow base, validation: imitation 0.767 -> 0.735 GenEval-2D, preference -> 0.80). An
    autoregressive generator keeps imitation (compose's +7.9 GenEval-2D over the base, 3 seeds).

    >>> generator_update("compose", "auto", "flow"), generator_update("compose", "auto", "autoregressive")
    ('preference', 'imitation')
    >>> generator_update("paper", "auto", "flow"), generator_update("verified", "auto", "diffusion")
    ('policy', 'imitation')
    >>> generator_update("verified", "preference", "flow")
    Traceback (most recent call last):
    ...
    ValueError: generator_update 'preference' needs tile verdicts, which only the compose preset makes (preset 'verified')
    """
    recipe = recipe_of(preset)
    if choice == "preference" and (recipe.update == "policy" or not recipe.verifies_tiles):
        raise ValueError(f"generator_update 'preference' needs tile verdicts, which only the compose preset makes "
                         f"(preset {preset!r})")
    if recipe.update == "policy":
        return "policy"
    if choice == "auto":
        return "preference" if recipe.verifies_tiles and paradigm in DENOISING_PARADIGMS else "imitation"
    return choice
