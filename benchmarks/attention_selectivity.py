"""Does the embedded base attend to the objects a question names, or pool the whole image? A diagnostic of the model.

    .venv/bin/python benchmarks/attention_selectivity.py [--checkpoint models/checkpoints/shapes-base] [--scenes 300]

Relation questions need each referent's cell. If the text tokens of a VQA sequence attend selectively to the
referents' image tokens, their cells can be read; if attention over the image is close to uniform, the text sees a
bag of the image tokens' encodings, and since a token's encoding is the sum of its patch and its row/column
embeddings, that bag says which objects are there and which cells are filled but not which object is where.
Colour, shape, count and existence questions are answerable from such a bag; relations are not.

For well-posed validation questions of two families (relation: the two referents; colour, "what color is the
circle": the one referent, for comparison) this measures, per decoder layer and head, at every text position after
the image, the share of the attention paid to the image's 16 tokens that lands on the referents' tokens, and the
share that lands on any object's token. It prints, per layer, the head and position with the highest mean
referent share beside two baselines: uniform over the 16 cells, and uniform over the scene's objects (attending to
every object alike). Evaluation only: the hidden scenes place the referents. Writes
benchmarks/results/attention_selectivity.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.registry import load_backbone  # noqa: E402
from world import questions, splits  # noqa: E402
from world.render import render  # noqa: E402
from world.scenes import GRID  # noqa: E402

BASE = ROOT / "models" / "checkpoints" / "shapes-base"


def referent_cells(scene, question: str) -> tuple[str, list[int]] | None:
    """(family, cells of the objects the question names), for relation and colour questions with unique referents."""
    parsed = questions.parse_question(question)
    if parsed is None or parsed.family not in ("relation", "color"):
        return None
    refs = [parsed.a, parsed.b] if parsed.family == "relation" else [questions.Referent(parsed.shape)]
    objs = [questions._unique(scene, r) for r in refs]
    if any(o is None for o in objs):
        return None
    return parsed.family, [o.row * GRID + o.col for o in objs]


def shares(backbone, scene, question: str, cells: list[int]) -> tuple[np.ndarray, np.ndarray, int]:
    """Per (layer, head, tail position): attention share on the referents' tokens and on any object's token, of
    the attention the position pays to the image's tokens; and the number of tail positions."""
    image = render(scene)
    ids, cell_ids = backbone._prefix("vqa", image, question)
    batch = backbone._pad([(ids, cell_ids, [False] * len(ids))])
    network = backbone.network
    with torch.no_grad():
        out = network.lm(inputs_embeds=network.embed(batch.ids, batch.cells), attention_mask=batch.mask,
                         position_ids=batch.positions, output_attentions=True)
    cells_row = batch.cells[0]
    image_pos = (cells_row >= 0).nonzero().flatten()
    tail_start = int(image_pos.max()) + 2  # after </img>
    objects = [o.row * GRID + o.col for o in scene.objects]
    on_ref = torch.tensor([int(c) in cells for c in cells_row[image_pos]], dtype=torch.bool)
    on_obj = torch.tensor([int(c) in objects for c in cells_row[image_pos]], dtype=torch.bool)
    ref_share, obj_share = [], []
    for layer in out.attentions:  # (1, heads, seq, seq)
        to_image = layer[0][:, tail_start:, :][:, :, image_pos]  # heads x tail x 16
        total = to_image.sum(-1).clamp(min=1e-9)
        ref_share.append((to_image[..., on_ref].sum(-1) / total).numpy())
        obj_share.append((to_image[..., on_obj].sum(-1) / total).numpy())
    return np.stack(ref_share), np.stack(obj_share), len(scene.objects)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(BASE))
    parser.add_argument("--scenes", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(2)
    backbone = load_backbone(args.checkpoint)
    backbone.network.lm.config._attn_implementation = "eager"  # sdpa returns no attention weights
    rng = random.Random(0)
    by_family: dict[str, dict[int, list]] = {"relation": {}, "color": {}}
    for i in range(args.scenes):
        scene = splits.scene_at("validation", i, 0)
        for item in questions.questions_for_scene(scene, rng, n=8):
            found = referent_cells(scene, item.question)
            if found is None:
                continue
            family, cells = found
            ref, obj, n_objects = shares(backbone, scene, item.question, cells)
            by_family[family].setdefault(ref.shape[-1], []).append((ref, obj, len(cells), n_objects))
    report = {}
    for family, by_length in by_family.items():
        # questions of one family differ in length; align tail positions from the end (<ans> is last)
        tail = min(by_length)
        refs = np.stack([r[..., -tail:] for group in by_length.values() for r, _, _, _ in group])
        objs = np.stack([o[..., -tail:] for group in by_length.values() for _, o, _, _ in group])
        n_ref = np.array([k for group in by_length.values() for _, _, k, _ in group])
        n_obj = np.array([m for group in by_length.values() for _, _, _, m in group])
        mean_ref, mean_obj = refs.mean(0), objs.mean(0)  # layer x head x tail
        layers = []
        for layer in range(mean_ref.shape[0]):
            head, position = np.unravel_index(mean_ref[layer].argmax(), mean_ref[layer].shape)
            layers.append({"layer": layer, "head": int(head), "position_from_end": int(tail - position),
                           "referent_share": round(float(mean_ref[layer, head, position]), 3),
                           "object_share": round(float(mean_obj[layer, head, position]), 3),
                           "mean_referent_share_all_heads_positions": round(float(mean_ref[layer].mean()), 3)})
        report[family] = {"questions": int(len(refs)),
                          "uniform_over_cells": round(float(np.mean(n_ref / GRID ** 2)), 3),
                          "uniform_over_objects": round(float(np.mean(n_ref / n_obj)), 3),
                          "layers": layers}
        print(f"{family}: {len(refs)} questions; referent share if attention were uniform over the 16 cells "
              f"{report[family]['uniform_over_cells']:.3f}, over the scene's objects "
              f"{report[family]['uniform_over_objects']:.3f}")
        for row in layers:
            print(f"  layer {row['layer']}: best head {row['head']} at position -{row['position_from_end']}: "
                  f"referents {row['referent_share']:.3f}, any object {row['object_share']:.3f} "
                  f"(mean over heads and positions: referents {row['mean_referent_share_all_heads_positions']:.3f})")
    out = ROOT / "benchmarks" / "results" / "attention_selectivity.json"
    out.write_text(json.dumps({"checkpoint": str(args.checkpoint), "scenes": args.scenes, **report}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
