"""GenEval prompt metadata (one JSON object per line: tag, include[{class, count, color?, position?}],
exclude?, prompt) in the shapes world: build such files from world prompts, and score images
against them with the pixel parser (evaluation only).

GenEval's `position: ["left of", 0]` on include[1] means "include[1] is left of include[0]". Class,
colour and relation names take the world's text normal form ("Circle" is "circle").
"""

from __future__ import annotations

import numpy as np

from world.parser import centroid_relation, parse
from world.prompts import ObjectSpec, Prompt, PromptSpec, matches, parse_prompt
from world.scenes import COLORS, SHAPES
from text.normal_form import normalize_text

TAGS = {"single_object": "single_object", "two_object": "two_object", "counting": "counting",
        "colors": "colors", "position": "position", "color_attr": "color_attr"}


def metadata_for_prompt(prompt: Prompt) -> dict:
    """The GenEval-schema line of a shapes-world prompt."""
    spec = parse_prompt(prompt.text)
    include = [{"class": o.shape, "count": o.count, **({"color": o.color} if o.color else {})} for o in spec.objects]
    if spec.relation is not None:
        # world: objects[0] <relation> objects[1]; GenEval: include[1] <relation> include[0]
        include = [include[1], {**include[0], "position": [spec.relation, 0]}]
    return {"tag": prompt.category, "include": include, "prompt": prompt.text}


def spec_from_metadata(meta: dict) -> PromptSpec | None:
    """The world requirement of a metadata line; None when it names things outside the world."""
    include = meta.get("include") or []
    classes = [normalize_text(str(i.get("class", ""))) for i in include]
    colors = [normalize_text(str(i["color"])) if i.get("color") else None for i in include]
    if not include or any(s not in SHAPES or (c is not None and c not in COLORS) for s, c in zip(classes, colors)):
        return None
    objects = [ObjectSpec(s, c, int(i.get("count", 1))) for s, c, i in zip(classes, colors, include)]
    relation = None
    positioned = [k for k, i in enumerate(include) if i.get("position")]
    if positioned:
        k = positioned[0]
        relation, target = normalize_text(str(include[k]["position"][0])), int(include[k]["position"][1])
        objects = [objects[k], objects[target]] + [o for j, o in enumerate(objects) if j not in (k, target)]
    return PromptSpec(meta.get("tag", ""), tuple(objects), relation)


def check_metadata(image: np.ndarray, meta: dict) -> bool:
    spec = spec_from_metadata(meta)
    if spec is None:
        raise ValueError(f"metadata {meta.get('prompt', meta)!r} names objects outside the shapes world")
    parsed = parse(image)
    return parsed.n_malformed == 0 and matches(spec, parsed.objects, centroid_relation)
