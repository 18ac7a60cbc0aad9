"""Compose stage: new labelled scenes from the tiles of the round's unlabeled images (the `compose` preset).

1. Cut every image of the round into its grid cells; the most common tile is the background.
2. Show each distinct object tile alone on the background in a few cells; the Solver captions each
   view (greedy) and the tile is named only when every caption names the same single object
   (`tile_names`, one row per distinct tile).
3. Recompose each image whose object tiles all have names, `per_image` times: the same tiles in new
   random cells. Its questions (the world's question grammar, every family) are answered from what was
   placed where, so relation labels are exact wherever the names are right. The Solver's greedy answer
   to each is stored beside the label, for the audit (`compositions`, one row per composed image).

Only the protocol's `caption` and `solve` are used; the hidden scenes are never read here. Images that
are not tiled scenes (no tile fills at least 40% of the cells) are refused with one line, since their
cells do not hold whole objects.

    asg round --round-idx 0 --preset compose
"""

from __future__ import annotations

import json
import random

import numpy as np

from models.protocol import SolveRequest
from storage.image_files import encode_png
from storage.row_batches import RowBatches
from storage.settings import Settings
from storage.tables import connect, upsert
from tasks.logic.answers import normalize_answer
from tasks.logic.stage_configs import ComposeConfig
from tasks.logic.tile_composition import (
    MIN_BACKGROUND_SHARE,
    agreed_name,
    background_of,
    join_tiles,
    new_cells,
    placed_tiles,
    probe_cells,
    split_tiles,
    tile_key,
)
from tasks.round_inputs import backbone_for, images_by_id, round_image_ids
from tasks.stage import stage_task
from tasks.stage_result import StageResult
from world import language
from world.captions import single_object
from world.scenes import GRID, SIZES, Scene, SceneObject


def named_tiles(backbone, tiles: dict[str, np.ndarray], background: np.ndarray) -> dict[str, dict]:
    """tile key -> its probe captions and agreed (colour, shape) or None."""
    cells = probe_cells(GRID)
    keys = sorted(tiles)
    views = [join_tiles(placed_tiles([tiles[k]], [c], background, GRID), GRID) for k in keys for c in cells]
    captions = backbone.caption(views) if views else []
    out = {}
    for i, key in enumerate(keys):
        own = captions[i * len(cells):(i + 1) * len(cells)]
        out[key] = {"captions": own, "name": agreed_name([single_object(c) for c in own])}
    return out


def _perceived_scene(names: list[tuple[str, str]], cells: list[int]) -> Scene:
    """The scene a composed image shows, as far as the names say (size and jitter play no part in any answer)."""
    return Scene(tuple(sorted((SceneObject(shape, color, SIZES[0], cell, 0, 0)
                               for (color, shape), cell in zip(names, cells)), key=lambda o: o.cell)))


def tile_name_rows(round_idx: int, named: dict[str, dict]) -> list[dict]:
    """`tile_names` rows of `named_tiles`' output."""
    return [{"tile_id": f"r{round_idx}:{k}", "round_idx": round_idx, "tile_key": k,
             "captions_json": json.dumps(v["captions"]), "color": v["name"][0] if v["name"] else "",
             "shape": v["name"][1] if v["name"] else "", "named": v["name"] is not None}
            for k, v in sorted(named.items())]


def round_background(db, source: str, n_images: int, round_idx: int, seed: int):
    """The round's image ids, images, background tile and the share of cells it fills; refuses images that are not
    tiled scenes with one line."""
    ids = round_image_ids(db, source, n_images, round_idx, seed)
    images = images_by_id(db, "images", "image_id", ids)
    background, share = background_of(images, GRID)
    if share < MIN_BACKGROUND_SHARE:
        raise ValueError(f"compose preset: the images of {source} are not tiled scenes (the most common tile "
                         f"fills {share:.0%} of cells, below {MIN_BACKGROUND_SHARE:.0%}); use another preset")
    return ids, images, background, share


def composition_rows(round_idx: int, image_id: str, image: np.ndarray, background_key: str,
                     names: dict[str, tuple[str, str] | None], background: np.ndarray, per_image: int,
                     questions_per_scene: int, seed: int, relation_questions: int = 0) -> list[dict]:
    """The composed images of one source image (none when any object tile has no name).

    Each gets `questions_per_scene` questions drawn over the families, plus up to `relation_questions` more
    relation questions: their labels are exact by construction where the names are right, and relations are
    what the Solver knows least (chance) and every other source labels worst."""
    objects = [(cell, tile, key) for cell, tile in enumerate(split_tiles(image, GRID))
               if (key := tile_key(tile)) != background_key]
    if not objects or any(names.get(key) is None for _, _, key in objects):
        return []
    rng = random.Random(f"compose:{seed}:{round_idx}:{image_id}")
    rows = []
    for j in range(per_image):
        cells = new_cells(len(objects), GRID, rng)
        own_names = [names[key] for _, _, key in objects]
        scene = _perceived_scene(own_names, cells)
        composed = join_tiles(placed_tiles([t for _, t, _ in objects], cells, background, GRID), GRID)
        items = language.questions_for_scene(scene, rng, questions_per_scene)
        asked = {it.question for it in items}
        items += [it for it in language.questions_for_scene(scene, rng, 64)
                  if it.family == "relation" and it.question not in asked][:relation_questions]
        rows.append({"composition_id": f"r{round_idx}:{image_id}:c{j}", "round_idx": round_idx,
                     "image_id": image_id,
                     "placement_json": json.dumps([[src, dst] for (src, _, _), dst in zip(objects, cells)]),
                     "objects_json": json.dumps([[c, s, cell] for (c, s), cell in zip(own_names, cells)]),
                     "caption": language.caption(scene),
                     "questions_json": json.dumps([[it.question, it.answer, it.family] for it in items]),
                     "greedy_json": "[]", "png": encode_png(composed), "_image": composed,
                     "_questions": [it.question for it in items]})
    return rows


@stage_task("compose", "compose-scenes")
def compose_scenes(round_idx: int, checkpoint_uri: str, source: str, n_images: int, seed: int = 0,
                   config: ComposeConfig = ComposeConfig(), questions_per_scene: int = 8,
                   tables: dict[str, int] | None = None, namespace: str = "", chunk_images: int = 1024) -> StageResult:
    settings = Settings.from_env().within(namespace)
    db = connect(settings, at=tables)
    ids, images, background, share = round_background(db, source, n_images, round_idx, seed)
    bg_key = tile_key(background)
    distinct: dict[str, np.ndarray] = {}
    for image in images:
        for tile in split_tiles(image, GRID):
            distinct.setdefault(tile_key(tile), tile)
    distinct.pop(bg_key)
    backbone = backbone_for(checkpoint_uri, settings)
    named = named_tiles(backbone, distinct, background)
    names = {k: v["name"] for k, v in named.items()}
    tile_rows = tile_name_rows(round_idx, named)
    rows, n_questions = RowBatches("compositions"), 0
    for start in range(0, len(ids), chunk_images):  # composed images and their questions exist a chunk at a time
        part = [r for image_id, image in zip(ids[start:start + chunk_images], images[start:start + chunk_images])
                for r in composition_rows(round_idx, image_id, image, bg_key, names, background, config.per_image,
                                          questions_per_scene, seed, config.relation_questions)]
        requests = [SolveRequest(r["_image"], q, "canonical", 0.0, 1.0) for r in part for q in r["_questions"]]
        greedy = iter(backbone.solve(requests, seed=seed) if requests else [])
        n_questions += len(requests)
        for r in part:
            r["greedy_json"] = json.dumps([normalize_answer(next(greedy).text) for _ in r.pop("_questions")])
            del r["_image"]
            rows.append(r)
    where = f"round_idx = {round_idx}"
    composed = rows.table()
    versions = {"tile_names": upsert(db, "tile_names", tile_rows, replace_where=where),
                "compositions": upsert(db, "compositions", composed, replace_where=where)}
    composable = len(set(composed["image_id"].to_pylist()))
    metrics = {"background_share": share, "tiles_distinct": len(distinct),
               "tiles_named_share": sum(v is not None for v in names.values()) / max(1, len(names)),
               "images_composable_share": composable / max(1, len(ids)), "compositions": len(rows),
               "composed_questions": n_questions}
    return StageResult("compose", round_idx, versions, len(rows), metrics)
