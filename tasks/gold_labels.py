"""The world's true labels for a round's own items: evaluation and the gold-label ceiling only.

Nothing here may feed a label-free preset. The diagnose stage uses it to judge the round's self-made
labels; the `gold-ceiling` preset (named so nobody mistakes it for a method) trains on the same proposed
questions and generations with these labels, to measure how much any label source could give.
"""

from __future__ import annotations

import json
from dataclasses import replace

from storage.image_files import decode_png
from storage.tables import read, sql_quote
from world import captions, language, parser, splits
from world.scenes import Scene


def scene_of_source(source_uri: str):
    """The hidden scene behind an embedded-world image, or None for any other source."""
    if not source_uri.startswith("world://"):
        return None
    split, index, seed = splits.parse_source_uri(source_uri)
    return splits.scene_at(split, index, seed)


def true_answers(db, items: list[dict]) -> dict[str, str | None]:
    """question_id -> the oracle's answer on the item's hidden scene (None: ill-posed or not a world image)."""
    ids = sorted({item["image_id"] for item in items})
    if not ids:
        return {}
    frame = read(db, "images", columns=["image_id", "source_uri"],
                 where=f"image_id IN ({', '.join(sql_quote(i) for i in ids)})")
    scenes = {i: scene_of_source(u) for i, u in zip(frame["image_id"], frame["source_uri"])}
    out = {}
    for item in items:
        scene = scenes.get(item["image_id"])
        out[item["question_id"]] = None if scene is None else language.oracle_answer(scene, item["question"])
    return out


def correct_images(db, table: str, key: str, round_idx: int) -> dict[str, bool]:
    """`key` -> whether the world's pixel parser finds exactly what its prompt asks for, for the round's rows of an
    image table with `prompt` and `png` columns (`generations`, `tile_corrections`)."""
    frame = read(db, table, where=f"round_idx = {round_idx}", columns=[key, "prompt", "png"])
    out = {}
    for image_id, prompt, png in zip(frame[key], frame["prompt"], frame["png"]):
        try:
            out[image_id] = parser.check_prompt(decode_png(png), prompt)
        except ValueError:  # a prompt outside the world's grammar has no parser verdict
            out[image_id] = False
    return out


def correct_generations(db, round_idx: int) -> dict[str, bool]:
    """generation_id -> whether the world's pixel parser finds exactly what its prompt asks for."""
    return correct_images(db, "generations", "generation_id", round_idx)


def composed_truths(db, compositions) -> dict[str, object]:
    """composition_id -> the true scene of a recomposed image: the source's hidden objects moved to the cells the
    compose stage put their tiles in (None when the source has no hidden scene). `compositions` holds rows of
    the `compositions` table with at least composition_id, image_id and placement_json."""
    if compositions.empty:
        return {}
    ids = sorted(set(compositions["image_id"]))
    frame = read(db, "images", columns=["image_id", "source_uri"],
                 where=f"image_id IN ({', '.join(sql_quote(i) for i in ids)})")
    scenes = {i: scene_of_source(u) for i, u in zip(frame["image_id"], frame["source_uri"])}
    out = {}
    for row in compositions.itertuples():
        scene = scenes.get(row.image_id)
        if scene is None:
            out[row.composition_id] = None
            continue
        at = {o.cell: o for o in scene.objects}
        moved = [replace(at[src], cell=dst) for src, dst in json.loads(row.placement_json) if src in at]
        out[row.composition_id] = Scene(tuple(sorted(moved, key=lambda o: o.cell)))
    return out


def composed_true_labels(db, compositions) -> dict[str, tuple[list[tuple[str, str]], str]]:
    """composition_id -> (its questions with the oracle's answers on the true recomposed scene, that scene's true
    caption), for the compose-gold ceiling. A question ill-posed on the true scene (a tile the Solver misnamed can
    make a referent missing or not unique) is left out; a composition with no hidden scene is absent."""
    truths = composed_truths(db, compositions)
    out = {}
    for row in compositions.itertuples():
        scene = truths.get(row.composition_id)
        if scene is None:
            continue
        asked = [question for question, _label, _family in json.loads(row.questions_json)]
        answered = [(q, language.oracle_answer(scene, q)) for q in asked]
        out[row.composition_id] = ([(q, a) for q, a in answered if a is not None], captions.caption(scene))
    return out
