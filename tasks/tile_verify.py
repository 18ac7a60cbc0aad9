"""Tile-verify stage (the `compose` preset): read every generated image of the round tile by tile.

Each generated image is cut into its grid cells. Object tiles the compose stage already named keep their
names; tiles it has not seen are named the same way (the Solver captions each alone on the background in a
few cells; a name counts only when every caption agrees) and added to `tile_names`. The objects an image
shows are its named tiles at their cells, and `tasks/logic/tile_verdicts.py` says whether they are exactly
what the prompt asks, relations read from the cells. One row per generation in `tile_verdicts`; the filter
stage imitates only images whose verdict is a match.

With `corrections` on (`generate.tile_corrections`), a spec none of whose samples match gets one corrected image
(`tasks/logic/tile_corrections.py`): its closest sample with the prompt's object count, each object cell given a
tile the Solver named as the prompt asks, drawn from the round's unlabeled images. One row per such spec in
`tile_corrections`; the filter imitates it where no sample matched.

The Solver's questions judge relations at chance, so they cannot pick a right position image; the grid can.
No hidden scene or parser is read.

    asg round --round-idx 0 --preset compose
"""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np

from storage.image_files import encode_png
from storage.settings import Settings
from storage.tables import connect, existing, read, upsert
from tasks.compose import named_tiles, round_background, tile_name_rows
from tasks.logic.tile_composition import join_tiles, split_tiles, tile_key
from tasks.logic.tile_corrections import changed_cells, corrected_objects
from tasks.logic.tile_verdicts import MATCH, PerceivedObject, perceived_objects, tile_verdict
from tasks.round_inputs import backbone_for, images_by_id
from tasks.stage import stage_task
from tasks.stage_result import StageResult
from world.scenes import GRID


CHUNK_IMAGES = 4096


@stage_task("tile-verify", "verify-generations-by-tiles")
def verify_generations(round_idx: int, checkpoint_uri: str, source: str, n_images: int, seed: int = 0,
                       tables: dict[str, int] | None = None, namespace: str = "",
                       corrections: bool = False) -> StageResult:
    settings = Settings.from_env().within(namespace)
    db = connect(settings, at=tables)
    where = f"round_idx = {round_idx}"
    gens = read(db, "generations", where=where, columns=["generation_id", "spec_id", "prompt"])
    gens = gens.sort_values("generation_id").reset_index(drop=True)
    _, pool, background, _ = round_background(db, source, n_images, round_idx, seed)
    bg_key = tile_key(background)
    pool_tiles = object_tiles(pool, bg_key) if corrections else {}  # the pool's images need not outlive this line
    del pool
    known = read(db, "tile_names", where=where, columns=["tile_key", "color", "shape", "named"])
    names = {r.tile_key: (r.color, r.shape) if r.named else None for r in known.itertuples()}
    keys_of, unseen, canonical = [], {}, {}  # one string object per distinct tile key, shared by every image
    generation_ids = gens["generation_id"].tolist()
    for start in range(0, len(generation_ids), CHUNK_IMAGES):  # decoded images exist a chunk at a time
        for image in images_by_id(db, "generations", "generation_id", generation_ids[start:start + CHUNK_IMAGES]):
            tiles = split_tiles(image, GRID)
            keys = [canonical.setdefault(k, k) for k in map(tile_key, tiles)]
            keys_of.append(keys)
            for key, tile in zip(keys, tiles):
                if key != bg_key and key not in names:
                    unseen.setdefault(key, tile.copy())
    new = named_tiles(backbone_for(checkpoint_uri, settings), unseen, background) if unseen else {}
    names.update({k: v["name"] for k, v in new.items()})
    rows, objects_of = [], []
    for row, keys in zip(gens.itertuples(), keys_of):
        objects = perceived_objects(keys, names, bg_key, GRID)
        objects_of.append(objects)
        rows.append({"generation_id": row.generation_id, "round_idx": round_idx, "spec_id": row.spec_id,
                     "objects_json": json.dumps(None if objects is None else
                                                [[o.color, o.shape, o.cell] for o in objects]),
                     "verdict": tile_verdict(row.prompt, objects, GRID)})
    versions = {"tile_verdicts": upsert(db, "tile_verdicts", rows, replace_where=where)}
    fixes = (corrected_images(db, round_idx, gens, rows, objects_of, tiles_by_name(pool_tiles, names), seed)
             if corrections else [])
    if corrections or existing(db, "tile_corrections") is not None:  # off: a stale slice of an earlier run goes
        versions["tile_corrections"] = upsert(db, "tile_corrections", fixes, replace_where=where)
    if new:  # merged on the key: the compose stage's names of this round stay as they are
        versions["tile_names"] = upsert(db, "tile_names", tile_name_rows(round_idx, new))
    counts = Counter(r["verdict"] for r in rows)
    n = max(1, len(rows))
    metrics = {"generations": len(rows), "tiles_new": len(new),
               "tiles_new_named_share": sum(v["name"] is not None for v in new.values()) / max(1, len(new)),
               **{f"verdict_{v.replace('-', '_')}_share": c / n for v, c in sorted(counts.items())},
               "specs_with_match": len({r["spec_id"] for r in rows if r["verdict"] == MATCH})}
    if corrections:
        metrics.update({"specs_corrected": len(fixes),
                        "corrected_cells_mean": float(np.mean([len(json.loads(f["changed_cells_json"]))
                                                               for f in fixes])) if fixes else 0.0})
    return StageResult("tile-verify", round_idx, versions, len(rows), metrics)


def object_tiles(images, background_key: str) -> dict[str, np.ndarray]:
    """tile key -> tile, for the distinct object tiles of `images` (the round's unlabeled images: true renders of
    the world, unlike a generated tile)."""
    by_key: dict[str, np.ndarray] = {}
    for image in images:
        for tile in split_tiles(image, GRID):
            key = tile_key(tile)
            if key != background_key:
                by_key.setdefault(key, tile)
    return by_key


def tiles_by_name(tiles: dict[str, np.ndarray], names: dict) -> dict[tuple[str, str], list[np.ndarray]]:
    """(colour, shape) -> the tiles the Solver named so, in key order (unnamed tiles left out)."""
    out: dict[tuple[str, str], list[np.ndarray]] = {}
    for key in sorted(tiles):
        if names.get(key) is not None:
            out.setdefault(names[key], []).append(tiles[key])
    return out


def corrected_images(db, round_idx: int, gens, rows: list[dict], objects_of: list, pool_tiles: dict,
                     seed: int) -> list[dict]:
    """`tile_corrections` rows: for each spec with no matching sample, its sample needing the fewest changed cells
    (ties: the smaller id), corrected with named pool tiles drawn per spec."""
    best: dict[str, tuple[int, str, str, list[PerceivedObject], list[int]]] = {}
    matched = {r["spec_id"] for r in rows if r["verdict"] == MATCH}
    for row, objects in zip(gens.itertuples(), objects_of):
        if row.spec_id in matched or objects is None:
            continue
        fixed = corrected_objects(row.prompt, objects, GRID, pool_tiles.keys())
        if fixed is None:
            continue
        cells = changed_cells(objects, fixed)
        key = (len(cells), row.generation_id)
        if row.spec_id not in best or key < best[row.spec_id][:2]:
            best[row.spec_id] = (len(cells), row.generation_id, row.prompt, fixed, cells)
    chosen = sorted(best.items())
    images = images_by_id(db, "generations", "generation_id", [c[1][1] for c in chosen])
    out = []
    for (spec_id, (_, generation_id, prompt, fixed, cells)), image in zip(chosen, images):
        rng = random.Random(f"tile-correction:{seed}:{round_idx}:{spec_id}")
        tiles = split_tiles(image, GRID).copy()
        by_cell = {o.cell: (o.color, o.shape) for o in fixed}
        for cell in cells:
            tiles[cell] = rng.choice(pool_tiles[by_cell[cell]])
        out.append({"correction_id": f"{spec_id}:fix", "round_idx": round_idx, "spec_id": spec_id,
                    "generation_id": generation_id, "prompt": prompt,
                    "objects_json": json.dumps([[o.color, o.shape, o.cell] for o in fixed]),
                    "changed_cells_json": json.dumps(cells), "png": encode_png(join_tiles(tiles, GRID))})
    return out
