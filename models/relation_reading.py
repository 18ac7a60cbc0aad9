"""Relation reading for the embedded backbone: the three changes that made relations learnable.

`benchmarks/relation_learnability.py` (a diagnostic with true labels) found the base answers relations at chance
because (1) its heads attend to every object alike, (2) an image token's cell, added on top of a patch encoding
many times larger, is not readable from the token, and (3) even with both cells read perfectly, turning two cells
and the relation word into yes/no in one token is not learned. Together, (1) a head per named object taught to
attend to it at `<ans>`, (2) the cell in hidden dimensions of its own and (3) the answer written as the
comparison's steps took held-out relation accuracy from 0.48 to 0.89. `ShapesConfig.relation_reading` turns all
three on; this module holds what they need besides the attention hook (`referent_attention.py`):

    >>> step_candidates("is the red circle left of the blue square ?", "yes")[:3]
    ['zero one', 'zero two', 'zero three']
    >>> step_candidates("how many circles are there ?", "two") is None
    True

Steps are the two referents' cells on the relation's axis as number words ("left of": columns, "above": rows),
then the answer: "is the red circle left of the blue square ?" -> "one three yes". A labeled example gives its true
steps (`TrainingExample.steps`); an example with only a yes/no label (every example after pretraining) is trained
on the steps the model itself finds most likely among those consistent with its label.
"""

from __future__ import annotations

import torch

from world.questions import axis_relation_holds, parse_question
from world.scenes import GRID
from world.vocabulary import NUMBER_WORDS

POSITION_GAIN = 8.0  # one-hot cell channels at about the scale of an object's patch encoding (norm ~27)
ATTEND_WEIGHT = 0.5  # weight of -log(attention on a named object) beside the example's answer loss


def with_position_channels(patch: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """The patch encoding with its last 2 * GRID dimensions replaced by a one-hot row and a one-hot column
    (times `POSITION_GAIN`), so where a token is stays readable whatever it shows."""
    width = 2 * GRID
    where = torch.cat([torch.nn.functional.one_hot(cells // GRID, GRID),
                       torch.nn.functional.one_hot(cells % GRID, GRID)], -1).to(patch.dtype) * POSITION_GAIN
    return torch.cat([patch[..., :-width], where], -1)


def step_candidates(question: str, answer: str) -> list[str] | None:
    """Every "<cell> <cell>" pair of number words consistent with `answer` to the relation question `question`;
    None when the question is not a relation question or the answer is not yes/no."""
    parsed = parse_question(question)
    if parsed is None or parsed.family != "relation" or answer not in ("yes", "no"):
        return None
    want = answer == "yes"
    return [f"{NUMBER_WORDS[x]} {NUMBER_WORDS[y]}" for x in range(GRID) for y in range(GRID)
            if axis_relation_holds(parsed.relation, x, y) is want]


def final_answer(text: str) -> str:
    """The answer of a decoded answer text: its last word when it ends steps ("one three yes" -> "yes")."""
    words = text.split()
    return words[-1] if len(words) > 1 and words[-1] in ("yes", "no") else text
