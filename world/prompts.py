"""GenEval-2D text-to-image prompts: grammar, sampling, satisfying scenes and implied checks."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, TypeVar

from world.questions import relation_holds
from world.scenes import COLORS, GRID, SHAPES, Scene, random_object
from text.normal_form import normalize_text
from world.vocabulary import NUMBER_WORDS, PLURALS, RELATIONS, SINGULARS, number_word

CATEGORIES: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
_COUNTS = (2, 3, 4)


@dataclass(frozen=True)
class Prompt:
    text: str
    category: str


@dataclass(frozen=True)
class ObjectSpec:
    """`count` objects of `shape`; `color` None accepts any colour."""
    shape: str
    color: str | None
    count: int = 1


@dataclass(frozen=True)
class PromptSpec:
    """What a prompt requires: exactly these objects (shapes distinct across specs) and maybe a relation
    `objects[0] <relation> objects[1]`."""
    category: str
    objects: tuple[ObjectSpec, ...]
    relation: str | None = None

    @property
    def n_objects(self) -> int:
        return sum(o.count for o in self.objects)


class _Thing(Protocol):
    shape: str | None
    color: str


T = TypeVar("T", bound=_Thing)


def _phrase(spec: ObjectSpec) -> str:
    return f"a {spec.shape}" if spec.color is None else f"a {spec.color} {spec.shape}"


def prompt_text(spec: PromptSpec) -> str:
    if spec.category == "counting":
        o = spec.objects[0]
        return f"{number_word(o.count)} {PLURALS[o.shape]}"
    if spec.relation is not None:
        return f"{_phrase(spec.objects[0])} {spec.relation} {_phrase(spec.objects[1])}"
    return " and ".join(_phrase(o) for o in spec.objects)


def _object_phrase(words: list[str]) -> ObjectSpec | None:
    if len(words) == 2 and words[0] == "a" and words[1] in SHAPES:
        return ObjectSpec(words[1], None)
    if len(words) == 3 and words[0] == "a" and words[1] in COLORS and words[2] in SHAPES:
        return ObjectSpec(words[2], words[1])
    return None


def _split_pair(words: list[str]) -> tuple[ObjectSpec, ObjectSpec, str | None] | None:
    for joiner in ("and",) + RELATIONS:
        j = joiner.split()
        for i in range(1, len(words)):
            if words[i:i + len(j)] == j:
                a, b = _object_phrase(words[:i]), _object_phrase(words[i + len(j):])
                if a is not None and b is not None:
                    return a, b, None if joiner == "and" else joiner
    return None


def _categorise(words: list[str]) -> PromptSpec | None:
    if len(words) == 2 and words[0] in NUMBER_WORDS and words[1] in SINGULARS:
        count = NUMBER_WORDS.index(words[0])
        return PromptSpec("counting", (ObjectSpec(SINGULARS[words[1]], None, count),)) if count in _COUNTS else None
    single = _object_phrase(words)
    if single is not None:
        return PromptSpec("single_object" if single.color is None else "colors", (single,))
    pair = _split_pair(words)
    if pair is None or pair[0].shape == pair[1].shape:
        return None
    a, b, relation = pair
    if relation is not None:
        return PromptSpec("position", (a, b), relation) if a.color is None and b.color is None else None
    if a.color is None and b.color is None:
        return PromptSpec("two_object", (a, b))
    if a.color is not None and b.color is not None and a.color != b.color:
        return PromptSpec("color_attr", (a, b))
    return None


def parse_prompt(text: str) -> PromptSpec:
    spec = _categorise(normalize_text(text).split())
    if spec is None:
        raise ValueError(f"not a prompt of the grammar: {text!r}")
    return spec


def _text(prompt: Prompt | str) -> str:
    return prompt.text if isinstance(prompt, Prompt) else prompt


def _random_spec(rng: random.Random, category: str) -> PromptSpec:
    s1, s2 = rng.sample(SHAPES, 2)
    c1, c2 = rng.sample(list(COLORS), 2)
    if category == "single_object":
        return PromptSpec(category, (ObjectSpec(s1, None),))
    if category == "colors":
        return PromptSpec(category, (ObjectSpec(s1, c1),))
    if category == "counting":
        return PromptSpec(category, (ObjectSpec(s1, None, rng.choice(_COUNTS)),))
    if category == "two_object":
        return PromptSpec(category, (ObjectSpec(s1, None), ObjectSpec(s2, None)))
    if category == "position":
        return PromptSpec(category, (ObjectSpec(s1, None), ObjectSpec(s2, None)), rng.choice(RELATIONS))
    if category == "color_attr":
        return PromptSpec(category, (ObjectSpec(s1, c1), ObjectSpec(s2, c2)))
    raise ValueError(f"unknown prompt category {category!r}")


def sample_prompt(rng: random.Random, category: str | None = None) -> Prompt:
    category = rng.choice(CATEGORIES) if category is None else category
    return Prompt(prompt_text(_random_spec(rng, category)), category)


def matches(spec: PromptSpec, objects: Sequence[T], relation: Callable[[T, T, str], bool | None]) -> bool:
    """True when `objects` are exactly what `spec` names and its relation holds."""
    if len(objects) != spec.n_objects or any(o.shape is None for o in objects):
        return False
    groups = []
    for o in spec.objects:
        group = [x for x in objects if x.shape == o.shape]
        if len(group) != o.count or (o.color is not None and any(x.color != o.color for x in group)):
            return False
        groups.append(group)
    return spec.relation is None or bool(relation(groups[0][0], groups[1][0], spec.relation))


def scene_satisfies(scene: Scene, prompt: Prompt | str) -> bool:
    return matches(parse_prompt(_text(prompt)), scene.objects, relation_holds)


def _cells(spec: PromptSpec, rng: random.Random) -> list[int]:
    while True:
        cells = rng.sample(range(GRID * GRID), spec.n_objects)
        if spec.relation is None:
            return cells
        a, b = divmod(cells[0], GRID), divmod(cells[1], GRID)
        axis = 1 if spec.relation in ("left of", "right of") else 0
        if a[axis] != b[axis] and (a[axis] < b[axis]) == (spec.relation in ("left of", "above")):
            return cells


def scene_for_prompt(prompt: Prompt | str, rng: random.Random) -> Scene:
    spec = parse_prompt(_text(prompt))
    cells = iter(_cells(spec, rng))
    objects = [random_object(rng, next(cells), o.shape, o.color) for o in spec.objects for _ in range(o.count)]
    return Scene(tuple(sorted(objects, key=lambda o: o.cell)))


def _specs_for_scene(scene: Scene) -> list[PromptSpec]:
    objs = scene.objects
    if len(objs) == 1:
        o = objs[0]
        return [PromptSpec("single_object", (ObjectSpec(o.shape, None),)),
                PromptSpec("colors", (ObjectSpec(o.shape, o.color),))]
    if len({o.shape for o in objs}) == 1:
        return [PromptSpec("counting", (ObjectSpec(objs[0].shape, None, len(objs)),))] if len(objs) in _COUNTS else []
    if len(objs) != 2:
        return []
    specs = []
    for a, b in ((objs[0], objs[1]), (objs[1], objs[0])):
        plain = (ObjectSpec(a.shape, None), ObjectSpec(b.shape, None))
        specs.append(PromptSpec("two_object", plain))
        if a.color != b.color:
            specs.append(PromptSpec("color_attr", (ObjectSpec(a.shape, a.color), ObjectSpec(b.shape, b.color))))
        specs += [PromptSpec("position", plain, r) for r in RELATIONS if relation_holds(a, b, r)]
    return specs


def prompt_for_scene(scene: Scene, rng: random.Random) -> Prompt | None:
    specs = _specs_for_scene(scene)
    if not specs:
        return None
    spec = rng.choice(specs)
    return Prompt(prompt_text(spec), spec.category)


def checks_for_prompt(text: str) -> list[tuple[str, str]]:
    """2-3 (question, answer) pairs that follow from the prompt alone."""
    spec = parse_prompt(text)
    checks = [("how many objects are there ?", number_word(spec.n_objects))]
    if spec.relation is not None:
        a, b = spec.objects
        checks += [(f"is the {a.shape} {spec.relation} the {b.shape} ?", "yes"),
                   (f"is the {b.shape} {spec.relation} the {a.shape} ?", "no")]
        return checks
    for o in spec.objects:
        if o.color is not None:
            checks.append((f"what color is the {o.shape} ?", o.color))
        else:
            checks.append((f"how many {PLURALS[o.shape]} are there ?", number_word(o.count)))
    if spec.category == "colors":
        o = spec.objects[0]
        checks.append((f"what shape is the {o.color} object ?", o.shape))
    return checks
