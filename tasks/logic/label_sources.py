"""Label sources that can beat the Solver's own answers, and the rules that combine them.

A self-made label only helps when it is more accurate than the model already is on that item
(`../shared/docs/LABEL_SOURCES.md`). Besides the vote over framings (`majority`), a round can ask the
same backbone two more questions about every selected item, through the batched protocol only:
- `flip`: the Solver's greedy answer on the horizontally mirrored image, with left and right swapped in
  the question; a correct answer is invariant, so the label is kept only where both views agree;
- `caption`: the Solver's greedy answer on an image the Generator drew from the Solver's own caption of
  the source image (understanding -> text -> generation -> understanding); a caption lists objects,
  colours and counts but no positions, so it says nothing about relations.
Which views must agree is chosen per question family, from the question text alone.

    >>> question_kind("Is the red circle left of the blue square?")
    'relation'
    >>> mirror_question("is the red circle left of the blue square ?")
    'is the red circle right of the blue square ?'
    >>> agreement_decision("relation", "yes", flip="yes", caption="no")
    (True, 'flip-agrees')
    >>> agreement_decision("count", "two", flip="two", caption="three")
    (False, 'caption-disagrees')
"""

from __future__ import annotations

import re

KINDS = ("relation", "count", "color", "shape", "existence", "other")
# The views each question kind must agree with. A caption carries no positions, so relations use the
# mirrored view only; every other kind is invariant under the mirror and described by a caption.
REQUIRED_VIEWS: dict[str, tuple[str, ...]] = {
    "relation": ("flip",),
    "count": ("flip", "caption"),
    "color": ("flip", "caption"),
    "shape": ("flip", "caption"),
    "existence": ("flip", "caption"),
    "other": ("flip", "caption"),
}
_MIRROR = {"left": "right", "right": "left"}


def question_kind(question: str) -> str:
    """The question's kind from its words alone (no scene, no world grammar)."""
    words = re.findall(r"[a-z]+", question.lower())
    if any(w in ("left", "right", "above", "below") for w in words):
        return "relation"
    text = " ".join(words)
    if text.startswith("how many"):
        return "count"
    if text.startswith(("what color", "what colour")):
        return "color"
    if text.startswith("what shape"):
        return "shape"
    if text.startswith(("is there", "are there")):
        return "existence"
    return "other"


def mirror_question(question: str) -> str:
    """The question about the horizontally mirrored image that has the same true answer."""
    return re.sub(r"\b(left|right)\b", lambda m: _MIRROR[m.group(1)], question)


def agreement_decision(kind: str, label: str, flip: str | None, caption: str | None) -> tuple[bool, str]:
    """(keep the label, reason): every view required for `kind` must give the same answer as `label`.

    A view that was not computed (None) counts as a disagreement, so a missing view never passes.
    """
    if not label:
        return False, "no-label"
    views = {"flip": flip, "caption": caption}
    for view in REQUIRED_VIEWS.get(kind, REQUIRED_VIEWS["other"]):
        if views[view] != label:
            return False, f"{view}-disagrees"
    return True, "flip-agrees" if REQUIRED_VIEWS.get(kind) == ("flip",) else "views-agree"


def audit_rows(records: list[dict]) -> list[dict]:
    """Per (kind, source): items yielded, label accuracy and the Solver's greedy accuracy on those items.

    `records` hold kind, source, label_correct and greedy_correct (bools); the output is sorted by kind,
    then source, with `gain` = label accuracy - greedy accuracy (positive: the source beats the Solver).

    >>> audit_rows([{"kind": "count", "source": "majority", "label_correct": True, "greedy_correct": False},
    ...             {"kind": "count", "source": "majority", "label_correct": False, "greedy_correct": False}])
    [{'kind': 'count', 'source': 'majority', 'items': 2, 'label_accuracy': 0.5, 'greedy_accuracy': 0.0, 'gain': 0.5}]
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["kind"], r["source"]), []).append(r)
    rows = []
    for (kind, source), group in sorted(groups.items()):
        n = len(group)
        label = sum(bool(r["label_correct"]) for r in group) / n
        greedy = sum(bool(r["greedy_correct"]) for r in group) / n
        rows.append({"kind": kind, "source": source, "items": n, "label_accuracy": label,
                     "greedy_accuracy": greedy, "gain": label - greedy})
    return rows
