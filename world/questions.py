"""VQA question grammar: parsing question text, the evaluation oracle, and sampling well-posed questions."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from world.scenes import COLORS, SHAPES, Scene, SceneObject
from text.normal_form import normalize_text
from world.vocabulary import PLURALS, RELATIONS, SINGULARS, number_word

FAMILIES: tuple[str, ...] = ("color", "shape", "count", "exist", "relation")
_DEFAULT_N = 8


@dataclass(frozen=True)
class VQAItem:
    question: str
    answer: str
    family: str


@dataclass(frozen=True)
class Referent:
    """An object description: a shape, optionally with a colour."""
    shape: str
    color: str | None = None

    @property
    def text(self) -> str:
        return self.shape if self.color is None else f"{self.color} {self.shape}"

    def matches(self, obj: SceneObject) -> bool:
        return obj.shape == self.shape and (self.color is None or obj.color == self.color)


@dataclass(frozen=True)
class Question:
    """A parsed question; only the fields of its kind are set."""
    family: str
    shape: str | None = None
    color: str | None = None
    a: Referent | None = None
    b: Referent | None = None
    relation: str | None = None


def _referent(words: list[str]) -> Referent | None:
    if len(words) == 1 and words[0] in SHAPES:
        return Referent(words[0])
    if len(words) == 2 and words[0] in COLORS and words[1] in SHAPES:
        return Referent(words[1], words[0])
    return None


def _relation_question(body: list[str]) -> Question | None:
    # body = <ref> <relation> the <ref>
    for relation in RELATIONS:
        rel = relation.split()
        for i in range(1, len(body)):
            if body[i:i + len(rel)] == rel and body[i + len(rel):i + len(rel) + 1] == ["the"]:
                a, b = _referent(body[:i]), _referent(body[i + len(rel) + 1:])
                if a is not None and b is not None:
                    return Question("relation", a=a, b=b, relation=relation)
    return None


def parse_question(question: str) -> Question | None:
    w = normalize_text(question).split()
    if len(w) < 2 or w[-1] != "?":
        return None
    w = w[:-1]
    if len(w) == 5 and w[:4] == ["what", "color", "is", "the"] and w[4] in SHAPES:
        return Question("color", shape=w[4])
    if len(w) == 6 and w[:4] == ["what", "shape", "is", "the"] and w[4] in COLORS and w[5] == "object":
        return Question("shape", color=w[4])
    if w[:2] == ["how", "many"] and w[-2:] == ["are", "there"]:
        middle = w[2:-2]
        if middle == ["objects"]:
            return Question("count")
        if len(middle) == 1 and middle[0] in SINGULARS:
            return Question("count", shape=SINGULARS[middle[0]])
        if len(middle) == 2 and middle[0] in COLORS and middle[1] == "objects":
            return Question("count", color=middle[0])
        return None
    if len(w) == 5 and w[:3] == ["is", "there", "a"] and w[3] in COLORS and w[4] in SHAPES:
        return Question("exist", shape=w[4], color=w[3])
    if w[:2] == ["is", "the"]:
        return _relation_question(w[2:])
    return None


def question_family(question: str) -> str | None:
    parsed = parse_question(question)
    return None if parsed is None else parsed.family


def _unique(scene: Scene, ref: Referent) -> SceneObject | None:
    found = [o for o in scene.objects if ref.matches(o)]
    return found[0] if len(found) == 1 else None


def relation_holds(a: SceneObject, b: SceneObject, relation: str) -> bool | None:
    """Cell-based truth of `a <relation> b`; None when they share the relation's axis."""
    first, second = (a.col, b.col) if relation in ("left of", "right of") else (a.row, b.row)
    return axis_relation_holds(relation, first, second)


def axis_relation_holds(relation: str, first: int, second: int) -> bool | None:
    """Truth of a relation between two objects at indices `first`, `second` on its axis (columns for "left of" and
    "right of", rows for "above" and "below"); None when they are equal."""
    if first == second:
        return None
    return first < second if relation in ("left of", "above") else first > second


def named_objects(scene: Scene, question: str) -> list[SceneObject]:
    """The objects a question names, in the order it names them: a relation question's two referents, a colour
    question's one; empty for other families or when a name does not pick out exactly one object."""
    q = parse_question(question)
    if q is None or q.family not in ("relation", "color"):
        return []
    refs = [q.a, q.b] if q.family == "relation" else [Referent(q.shape)]
    found = [_unique(scene, ref) for ref in refs]
    return [] if any(obj is None for obj in found) else found


def answer(scene: Scene, q: Question) -> str | None:
    objs = scene.objects
    if q.family == "color":
        obj = _unique(scene, Referent(q.shape))
        return None if obj is None else obj.color
    if q.family == "shape":
        found = [o for o in objs if o.color == q.color]
        return found[0].shape if len(found) == 1 else None
    if q.family == "count":
        n = sum(1 for o in objs if (q.shape is None or o.shape == q.shape) and (q.color is None or o.color == q.color))
        return number_word(n)
    if q.family == "exist":
        return "yes" if any(o.shape == q.shape and o.color == q.color for o in objs) else "no"
    a, b = _unique(scene, q.a), _unique(scene, q.b)
    if a is None or b is None or a is b:
        return None
    holds = relation_holds(a, b, q.relation)
    return None if holds is None else ("yes" if holds else "no")


def oracle_answer(scene: Scene, question: str) -> str | None:
    parsed = parse_question(question)
    return None if parsed is None else answer(scene, parsed)


def referents_for(scene: Scene, obj: SceneObject) -> list[Referent]:
    """The descriptions that pick out `obj` alone in `scene` (colour and shape, then shape alone)."""
    refs = [Referent(obj.shape, obj.color), Referent(obj.shape)]
    return [r for r in refs if _unique(scene, r) is obj]


def _candidates(scene: Scene, rng: random.Random) -> dict[str, list[str]]:
    objs = scene.objects
    shapes, colors = Counter(o.shape for o in objs), Counter(o.color for o in objs)
    absent_shapes = [s for s in SHAPES if s not in shapes]
    absent_colors = [c for c in COLORS if c not in colors]
    # Only one absent kind each, so "zero" does not dominate the count answers.
    count_shapes = list(shapes) + rng.sample(absent_shapes, min(1, len(absent_shapes)))
    count_colors = list(colors) + rng.sample(absent_colors, min(1, len(absent_colors)))
    present = sorted({(o.color, o.shape) for o in objs})
    absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
    relation = []
    for a in objs:
        for b in objs:
            if a is b:
                continue
            for rel in RELATIONS:
                if relation_holds(a, b, rel) is None:
                    continue
                ra, rb = rng.choice(referents_for(scene, a) or [None]), rng.choice(referents_for(scene, b) or [None])
                if ra is not None and rb is not None:
                    relation.append(f"is the {ra.text} {rel} the {rb.text} ?")
    return {
        "color": [f"what color is the {s} ?" for s, n in shapes.items() if n == 1],
        "shape": [f"what shape is the {c} object ?" for c, n in colors.items() if n == 1],
        "count": [f"how many {PLURALS[s]} are there ?" for s in count_shapes]
        + [f"how many {c} objects are there ?" for c in count_colors] + ["how many objects are there ?"],
        "exist": [f"is there a {c} {s} ?" for c, s in present]
        + [f"is there a {c} {s} ?" for c, s in rng.sample(absent, min(len(present), len(absent)))],
        "relation": relation,
    }


def questions_for_scene(scene: Scene, rng: random.Random, n: int | None = None) -> list[VQAItem]:
    """Distinct well-posed questions, drawn round-robin over families in random order."""
    target = _DEFAULT_N if n is None else n
    pools = {f: rng.sample(qs, len(qs)) for f, qs in _candidates(scene, rng).items()}
    order = rng.sample(FAMILIES, len(FAMILIES))
    items: list[VQAItem] = []
    while len(items) < target and any(pools.values()):
        for family in order:
            if pools[family] and len(items) < target:
                question = pools[family].pop()
                items.append(VQAItem(question, oracle_answer(scene, question), family))
    return items
