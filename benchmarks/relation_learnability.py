"""Can the embedded base learn relations at all? Trains on many *true* relation labels and measures held-out relation VQA.

A diagnostic of the model, not a method: the labels come from the world's hidden scenes of the unlabeled split
(what no training decision of a round may see), so this bounds what any label source could teach relations
through this base. It trains either the Solver's LoRA adapter (`lora`) or every weight of the base (`full`) on
relation questions only (`rel`) or on every family (`all`), then evaluates VQA on the validation split.

    .venv/bin/python benchmarks/relation_learnability.py lora 12000 1500 1e-3 rel
    .venv/bin/python benchmarks/relation_learnability.py full 12000 1500 3e-3 rel
    .venv/bin/python benchmarks/relation_learnability.py full 12000 1000 1e-3 rel --variant ordinal
    .venv/bin/python benchmarks/relation_learnability.py full 12000 1000 1e-3 rel --variant question-first
    .venv/bin/python benchmarks/relation_learnability.py full 12000 1000 1e-3 rel --variant deeper
    .venv/bin/python benchmarks/relation_learnability.py full 12000 3000 1e-3 all --variant ordinal+deeper+question-first
    .venv/bin/python benchmarks/relation_learnability.py full 12000 2000 1e-3 all --probe locate
    .venv/bin/python benchmarks/relation_learnability.py full 12000 2000 1e-3 all --probe locate --variant position-gain
    .venv/bin/python benchmarks/relation_learnability.py full 12000 1500 1e-3 all --locate-first 1500
    .venv/bin/python benchmarks/relation_learnability.py full 12000 3000 1e-3 all --probe locate --from-scratch
    .venv/bin/python benchmarks/relation_learnability.py full 4000 1500 3e-3 locate --variant position-channels \
        --attend-referents 0.5 --attend-at answer --attend-layer 3
    .venv/bin/python benchmarks/relation_learnability.py full 12000 1500 3e-3 rel --locate-first 1500 \
        --variant position-channels --attend-referents 0.5 --attend-at answer --attend-layer 3 --relation-steps

Variants of the model test whether the plateau is the position code or the token order (both start from the
base's weights): `ordinal` replaces the learned 4-entry row/column embeddings by fixed ordered features of the cell
(scaled index, thermometer code, centred offset) through a new linear projection, so "left of" is a linear
comparison; `question-first` puts the question before the image in VQA sequences, so image tokens can attend to the
referents the question names; `position-gain` multiplies the base's row/column embeddings by 16 (in the base they
are about 1/16 of an object patch's encoding in norm, so position is a few percent of an image token); `deeper`
inserts two decoder layers in the middle of the base's four, initialised as the identity (zero output projections),
to test whether depth is what relations lack; `position-channels` gives the cell hidden dimensions of its own (a
one-hot row and column in the patch encoding's last 8 dimensions), so it is readable from a token whatever the
token shows. Variants
combine with "+". `all` mixes relations with every other family (relation-only training with every weight free
also erases the colour/shape reading that relations need). `--probe locate` adds a one-referent task, "the red
circle left of" -> its column as a number word ("above" -> its row), to the training mix and reports its held-out
accuracy: whether the model can read one object's cell at all.

`--attend-referents W` adds an auxiliary loss that teaches one head per named object to attend to that object's
image token (W times -log of its attention weight; `--attend-at word`: at the word naming it, `answer`: at `<ans>`,
one head per object; `--attend-layer`), and reports the held-out weight the head puts there
(`referent_attention`): `benchmarks/attention_selectivity.py` found the base's heads attend to all objects alike.
`--relation-steps` trains relation answers as the comparison's steps (both cells, then yes/no) and reports
`relation_steps_accuracy` on validation scenes.

Each run prints one JSON line (and appends it to benchmarks/results/relation_learnability.jsonl): the training
loss at the start and over the last 20 steps, and VQA by family before and after. The loss is the mean over the
answer token and the end-of-answer token, so a yes/no answer at chance shows as about ln(2)/2 = 0.35.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.protocol import TrainingExample  # noqa: E402
from models.referent_attention import attention_log_weights  # noqa: E402
from models.registry import load_backbone  # noqa: E402
from models.shapes_backbone import ShapesBackbone, ShapesNetwork  # noqa: E402
from world.scenes import GRID  # noqa: E402
from models.training import TrainConfig, train  # noqa: E402
from world import questions, splits  # noqa: E402
from tasks.logic.held_out_evaluation import EvalConfig, evaluate_vqa  # noqa: E402
from world.render import render  # noqa: E402
from world.scenes import Scene  # noqa: E402
from world.scenes import SHAPES  # noqa: E402
from world.vocabulary import NUMBER_WORDS  # noqa: E402

BASE = ROOT / "models" / "checkpoints" / "shapes-base"


def ordinal_cell_features() -> torch.Tensor:
    """Per grid cell (row-major): for row and for column, index / (GRID - 1), index > k for k < GRID - 1, and
    index - (GRID - 1) / 2."""
    rows = []
    for cell in range(GRID * GRID):
        row = []
        for index in (cell // GRID, cell % GRID):
            row += [index / (GRID - 1)] + [float(index > k) for k in range(GRID - 1)] + [index - (GRID - 1) / 2]
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float32)


class OrdinalNetwork(ShapesNetwork):
    """The shapes network with ordered cell features in place of the learned row/column embeddings."""

    def __init__(self, config, vocab_size: int):
        super().__init__(config, vocab_size)
        self.register_buffer("cell_features", ordinal_cell_features(), persistent=False)
        self.cell_projection = torch.nn.Linear(self.cell_features.shape[1], config.hidden_size)

    def embed(self, ids, cells):
        x = self.lm.get_input_embeddings()(ids)
        is_image = (cells >= 0).unsqueeze(-1)
        codes = (ids - self.image_offset).clamp(min=0, max=self.code_pixels.shape[0] - 1)
        visual = self.cell_projection(self.cell_features[cells.clamp(min=0)]) + self.patch(self.code_pixels[codes])
        return x + is_image * visual


class ProjectorNetwork(ShapesNetwork):
    """The shapes network plus a LLaVA-style MLP projector over each image token's pixels and its one-hot row and
    column, added to the base's embedding with a zero-initialised output layer (so it starts as the base): whether
    binding what a cell holds to where it is, before the first attention layer, is what locating needs."""

    def __init__(self, config, vocab_size: int):
        super().__init__(config, vocab_size)
        width = self.code_pixels.shape[1] + 2 * GRID
        self.projector = torch.nn.Sequential(torch.nn.Linear(width, 4 * config.hidden_size), torch.nn.GELU(),
                                             torch.nn.Linear(4 * config.hidden_size, config.hidden_size))
        torch.nn.init.zeros_(self.projector[2].weight)
        torch.nn.init.zeros_(self.projector[2].bias)

    def embed(self, ids, cells):
        is_image = (cells >= 0).unsqueeze(-1)
        c = cells.clamp(min=0)
        codes = (ids - self.image_offset).clamp(min=0, max=self.code_pixels.shape[0] - 1)
        where = torch.cat([torch.nn.functional.one_hot(c // GRID, GRID), torch.nn.functional.one_hot(c % GRID, GRID)],
                          -1).float()
        bound = self.projector(torch.cat([self.code_pixels[codes], where], -1))
        return super().embed(ids, cells) + is_image * bound


class PositionGainNetwork(ShapesNetwork):
    """The shapes network with its learned row/column embeddings multiplied by a fixed gain: in the shipped base an
    object token's patch encoding has norm about 27 and each position embedding about 1.6, so after the first
    RMSNorm where a cell is is a few percent of its token. The gain (16) brings position to the patch's scale."""

    GAIN = 16.0

    def embed(self, ids, cells):
        is_image = (cells >= 0).unsqueeze(-1)
        c = cells.clamp(min=0)
        extra = (self.GAIN - 1.0) * (self.rows(c // GRID) + self.cols(c % GRID))
        return super().embed(ids, cells) + is_image * extra


class QuestionFirstBackbone(ShapesBackbone):
    """VQA sequences as `<bos> <vqa> question <img> codes </img> <framing> <ans>`; other kinds unchanged."""

    def _prefix(self, kind, image, text="", framing="canonical"):
        if kind not in ("vqa", "vqa_shared"):
            return super()._prefix(kind, image, text, framing)
        v = self.vocab
        ids = [v.id("<bos>"), v.id("<vqa>")] + v.encode_text(text)
        image_ids, image_cells = self._image_tokens(image)
        ids, cells = ids + image_ids, [-1] * len(ids) + image_cells
        if kind == "vqa":
            ids, cells = ids + [v.framing_id(framing), v.id("<ans>")], cells + [-1, -1]
        return ids, cells


class FlatImagePositionsBackbone(ShapesBackbone):
    """Every image token at one 1-D position (the first cell's), so rotary positions no longer order the cells and
    shift how a query matches their content: where a cell is comes from the row/column embeddings alone."""

    def _pad(self, rows):
        batch = super()._pad(rows)
        steps = batch.mask * (batch.cells <= 0)  # text tokens and the first cell advance the position
        positions = (steps.cumsum(-1) - 1).clamp(min=0)
        return dataclasses.replace(batch, positions=positions)


REFERENT_CELLS: dict[tuple[str, bytes], list[tuple[int, int]]] = {}


def note_referents(scene: Scene, image: np.ndarray, prompt: str) -> None:
    """Record, for `--attend-referents`, which prompt words name which object's cell: in a relation question the
    first shape word names the first referent and the last shape word the second; in a colour question ("what color
    is the circle") and a locate item ("the red circle left of") the shape word names the one referent. Other
    families name no single object. Keys are the prompt and the image's bytes (evaluation-only labels: a diagnostic)."""
    words = prompt.split()
    shape_at = [i for i, w in enumerate(words) if w in SHAPES]
    parsed = questions.parse_question(prompt)
    if parsed is not None and parsed.family == "relation":
        pairs = [(shape_at[0], parsed.a), (shape_at[-1], parsed.b)]
    elif parsed is not None and parsed.family == "color":
        pairs = [(shape_at[0], questions.Referent(parsed.shape))]
    elif prompt.endswith(("left of", "above")) and shape_at:
        colour = words[shape_at[0] - 1] if shape_at[0] > 1 else None
        pairs = [(shape_at[0], questions.Referent(words[shape_at[0]], colour))]
    else:
        return
    found = [(i, questions._unique(scene, ref)) for i, ref in pairs]
    if all(obj is not None for _, obj in found):
        REFERENT_CELLS[(prompt, image.tobytes())] = [(i, obj.row * GRID + obj.col) for i, obj in found]


class AttendReferentsBackbone(ShapesBackbone):
    """The base trained with an auxiliary loss on attention heads of layer `LAYER`: for each object a prompt names
    (see `note_referents`), a head should attend to that object's image token (where and which head: `supervised`),
    -log of its weight, times `WEIGHT`, added to the example's loss. It teaches the content-selective attention the base lacks
    (`benchmarks/attention_selectivity.py`: its heads attend to all objects alike), to test whether relations
    become learnable once a referent's token is picked out. Uses the evaluation-only scenes: a diagnostic."""

    LAYER, HEAD, WEIGHT, AT = 1, 0, 0.5, "word"

    def supervised(self, marks: list[tuple[int, int]], prefix_length: int) -> list[tuple[int, int, int]]:
        """(head, query position, key cell) of each supervised weight. At "word": head `HEAD` at each naming word
        (<bos> <img> 16 codes </img> <vqa> come before the prompt's words, one token each). At "answer": the
        prefix's last token (<ans>, which predicts the answer) with head `HEAD` + k on the k-th named object."""
        if self.AT == "word":
            return [(self.HEAD, 1 + GRID * GRID + 2 + 1 + word, cell) for word, cell in marks]
        return [(self.HEAD + k, prefix_length - 1, cell) for k, (_, cell) in enumerate(marks)]

    def layer_log_weights(self):
        """Within: a list that each forward pass appends layer `LAYER`'s log attention weights to (batch x heads x
        seq x seq; models/referent_attention.py, as the package's `relation_reading` pretraining uses)."""
        return attention_log_weights(self.network.lm, self.LAYER)

    def example_nll(self, role, examples):
        if not self.network.training:
            return super().example_nll(role, examples)
        with self.layer_log_weights() as captured:
            nll = super().example_nll(role, examples)
        log_weights = captured[0]
        width = log_weights.shape[-1]  # the batch is left-padded to its longest row
        aux = torch.zeros_like(nll)
        for i, ex in enumerate(examples):
            marks = REFERENT_CELLS.get((ex.prompt, ex.image.tobytes())) if ex.image is not None else None
            if not marks:
                continue
            prefix = len(self._prefix(ex.kind, ex.image, ex.prompt, ex.framing)[0])
            start = width - prefix - len(self._target(ex)[0])
            terms = [log_weights[i, head, start + query, start + 2 + cell]
                     for head, query, cell in self.supervised(marks, prefix)]
            aux[i] = -torch.stack(terms).mean()  # log-weights: no vanishing gradient where the weight is ~0
        return nll + self.WEIGHT * aux

    def referent_attention(self, items: list[TrainingExample]) -> float:
        """Mean weight the supervised head puts on the named object's token, over the marked words of `items`."""
        weights = []
        with torch.no_grad():
            for ex in items:
                marks = REFERENT_CELLS.get((ex.prompt, ex.image.tobytes()))
                if not marks:
                    continue
                ids, cells = self._prefix(ex.kind, ex.image, ex.prompt, ex.framing)
                batch = self._pad([(ids, cells, [False] * len(ids))])
                with self.layer_log_weights() as captured:
                    self.network(batch.ids, batch.cells, batch.mask, batch.positions)
                weights += [float(captured[0][0, head, query, 2 + cell].exp())
                            for head, query, cell in self.supervised(marks, len(ids))]
        return float(np.mean(weights))


def deepened(base: ShapesBackbone, extra: int = 2) -> ShapesBackbone:
    """The base with `extra` identity-initialised decoder layers inserted after its first half."""
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    model = base.network.lm.model
    config = base.network.lm.config
    middle = len(model.layers) // 2
    for k in range(extra):
        layer = LlamaDecoderLayer(config, middle + k)
        torch.nn.init.zeros_(layer.self_attn.o_proj.weight)
        torch.nn.init.zeros_(layer.mlp.down_proj.weight)
        model.layers.insert(middle + k, layer)
    for i, layer in enumerate(model.layers):
        layer.self_attn.layer_idx = i
    config.num_hidden_layers = len(model.layers)
    return base


VARIANTS = ("base", "ordinal", "projector", "position-gain", "position-channels", "question-first", "deeper",
            "flat-image-positions")


def variant_of(base: ShapesBackbone, variant: str) -> ShapesBackbone:
    """`variant` is one of VARIANTS or several joined by "+" (e.g. "ordinal+deeper+question-first"), applied as
    network (ordinal), then depth (deeper), then sequence order (question-first)."""
    parts = set(variant.split("+"))
    unknown = parts - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variant {sorted(unknown)}; variants are {', '.join(VARIANTS)}, joined by '+'")
    if "ordinal" in parts:
        network = OrdinalNetwork(base.config, len(base.vocab))
        own = network.state_dict()
        network.load_state_dict({k: v for k, v in base.network.state_dict().items() if k in own}, strict=False)
        base = ShapesBackbone(base.config, base.vocab, network)
    if "projector" in parts:
        network = ProjectorNetwork(base.config, len(base.vocab))
        network.load_state_dict(base.network.state_dict(), strict=False)
        base = ShapesBackbone(base.config, base.vocab, network)
    if "position-gain" in parts:
        network = PositionGainNetwork(base.config, len(base.vocab))
        network.load_state_dict(base.network.state_dict(), strict=False)
        base = ShapesBackbone(base.config, base.vocab, network)
    if "position-channels" in parts:  # the package's relation_reading cell channels, on the base's weights
        base.network.position_channels = True
    if "deeper" in parts:
        base = deepened(base)
    if "question-first" in parts and "flat-image-positions" in parts:
        raise ValueError("question-first and flat-image-positions do not combine")
    if "question-first" in parts:
        base = QuestionFirstBackbone(base.config, base.vocab, base.network)
    if "flat-image-positions" in parts:
        base = FlatImagePositionsBackbone(base.config, base.vocab, base.network)
    return base


def relation_steps(scene: Scene, question: str, answer: str) -> str:
    """A relation answer given as the comparison's steps (`--relation-steps`): the two referents' cells on the
    relation's axis as number words, then yes/no ("is the red circle left of the blue square ?" -> "one three yes")."""
    parsed = questions.parse_question(question)
    a, b = questions._unique(scene, parsed.a), questions._unique(scene, parsed.b)
    axis = (lambda o: o.col) if parsed.relation in ("left of", "right of") else (lambda o: o.row)
    return f"{NUMBER_WORDS[axis(a)]} {NUMBER_WORDS[axis(b)]} {answer}"


RELATION_STEPS = False


def true_label_examples(n_scenes: int, relation_only: bool, split: str = "unlabeled") -> list[TrainingExample]:
    rng = random.Random(0)
    out = []
    for i in range(n_scenes):
        scene = splits.scene_at(split, i, 0)
        image = render(scene)
        for item in questions.questions_for_scene(scene, rng, n=8):
            if not relation_only or item.family == "relation":
                target = item.answer
                if RELATION_STEPS and item.family == "relation":
                    target = relation_steps(scene, item.question, item.answer)
                out.append(TrainingExample("vqa", image=image, prompt=item.question, target=target))
                note_referents(scene, image, item.question)
    return out


def relation_steps_accuracy(backbone: ShapesBackbone, items: list[TrainingExample]) -> float:
    """Held-out relation accuracy when answers are the comparison's steps: the least-loss target among every
    "<cell> <cell> yes|no" is decoded, and its last word is compared with the true yes/no."""
    candidates = [f"{x} {y} {yn}" for x in NUMBER_WORDS[:GRID] for y in NUMBER_WORDS[:GRID] for yn in ("yes", "no")]
    right = []
    with torch.no_grad():
        for start in range(0, len(items), 64):
            part = items[start:start + 64]
            nll = torch.stack([backbone.example_nll(None, [dataclasses.replace(ex, target=c) for ex in part])
                               for c in candidates], dim=1)
            right += [candidates[best].split()[-1] == ex.target.split()[-1]
                      for ex, best in zip(part, nll.argmin(1).tolist())]
    return float(np.mean(right))


def locate_examples(split: str, n_scenes: int, seed: int = 0, one_object: bool = False) -> list[TrainingExample]:
    """The `--probe locate` items: for every uniquely described object, "the <object> left of" -> its column and
    "the <object> above" -> its row, as a number word. One referent, no comparison: whether the model can read an
    object's cell at all, which every relation question needs twice. `one_object` keeps only each scene's first
    object, so no referent has to be picked out among others."""
    rng = random.Random(seed)
    out = []
    for i in range(n_scenes):
        scene = splits.scene_at(split, i, seed)
        if one_object:
            scene = Scene(scene.objects[:1])
        image = render(scene)
        for obj in scene.objects:
            refs = questions.referents_for(scene, obj)
            if not refs:
                continue
            ref = rng.choice(refs).text
            out.append(TrainingExample("vqa", image=image, prompt=f"the {ref} left of", target=NUMBER_WORDS[obj.col]))
            out.append(TrainingExample("vqa", image=image, prompt=f"the {ref} above", target=NUMBER_WORDS[obj.row]))
            note_referents(scene, image, f"the {ref} left of")
            note_referents(scene, image, f"the {ref} above")
    return out


def locate_accuracy(backbone: ShapesBackbone, items: list[TrainingExample]) -> dict[str, float]:
    """Held-out accuracy of the locate probe per axis: the number word of least loss among zero..three."""
    right = {"left of": [], "above": []}
    with torch.no_grad():
        for start in range(0, len(items), 64):
            part = items[start:start + 64]
            nll = torch.stack([backbone.example_nll(None, [dataclasses.replace(ex, target=word) for ex in part])
                               for word in NUMBER_WORDS[:GRID]], dim=1)
            for ex, best in zip(part, nll.argmin(1).tolist()):
                right["left of" if ex.prompt.endswith("left of") else "above"].append(NUMBER_WORDS[best] == ex.target)
    return {f"locate_{'column' if k == 'left of' else 'row'}": float(np.mean(v)) for k, v in right.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["lora", "full"])
    parser.add_argument("scenes", type=int)
    parser.add_argument("steps", type=int)
    parser.add_argument("lr", type=float)
    parser.add_argument("families", choices=["rel", "all", "locate"],
                        help="locate: train on the locate probe's items alone (implies --probe locate)")
    parser.add_argument("--checkpoint", default=str(BASE))
    parser.add_argument("--variant", default="base", help="one of %s, or several joined by +" % ", ".join(VARIANTS))
    parser.add_argument("--probe", choices=["none", "locate"], default="none",
                        help="locate: also train and test reading one object's row and column (see locate_examples)")
    parser.add_argument("--locate-first", type=int, default=0, metavar="STEPS",
                        help="a curriculum: STEPS steps on the locate items alone before the main run (implies "
                             "--probe locate)")
    parser.add_argument("--from-scratch", action="store_true",
                        help="start from a random-init network of the base's size instead of its weights (mode full): "
                             "whether the memorising seed-set pretraining is what blocks relations")
    parser.add_argument("--locate-objects", choices=["all", "one"], default="all",
                        help="one: the locate items show each scene's first object alone (no referent to pick out)")
    parser.add_argument("--attend-referents", type=float, default=0.0, metavar="WEIGHT",
                        help="train one head (layer 1, head 0) to attend from each word naming an object to that "
                             "object's image token, with this weight on -log(attention) (mode full; see "
                             "AttendReferentsBackbone)")
    parser.add_argument("--attend-at", choices=["word", "answer"], default="word",
                        help="word: at each word naming an object; answer: at <ans>, one head per named object")
    parser.add_argument("--attend-layer", type=int, default=1, help="the supervised heads' decoder layer")
    parser.add_argument("--relation-steps", action="store_true",
                        help="relation answers as the comparison's steps: both cells, then yes/no (see "
                             "relation_steps); reports relation_steps_accuracy on validation scenes")
    args = parser.parse_args()
    torch.set_num_threads(2)
    backbone = load_backbone(args.checkpoint)
    if (args.variant != "base" or args.from_scratch) and args.mode != "full":
        parser.error("--variant and --from-scratch change the network: use them with mode full")
    if args.from_scratch:
        backbone = ShapesBackbone.create(backbone.config, seed=0)
    backbone = variant_of(backbone, args.variant)
    if args.attend_referents:
        if args.mode != "full" or {"question-first", "flat-image-positions"} & set(args.variant.split("+")):
            parser.error("--attend-referents needs mode full and the base's token order (not question-first or "
                         "flat-image-positions)")
        AttendReferentsBackbone.WEIGHT = args.attend_referents
        AttendReferentsBackbone.AT = args.attend_at
        AttendReferentsBackbone.LAYER = args.attend_layer
        backbone = AttendReferentsBackbone(backbone.config, backbone.vocab, backbone.network)
    global RELATION_STEPS
    RELATION_STEPS = args.relation_steps
    examples = [] if args.families == "locate" else true_label_examples(args.scenes, args.families == "rel")
    steps_items = true_label_examples(150, True, split="validation") if args.relation_steps else []
    if args.families == "locate":
        args.probe = "locate"
    probe_items: list[TrainingExample] = []
    locate: list[TrainingExample] = []
    if args.locate_first:
        args.probe = "locate"
    if args.probe == "locate":
        one = args.locate_objects == "one"
        locate = locate_examples("unlabeled", args.scenes // 4, one_object=one)
        examples += locate
        probe_items = locate_examples("validation", 150, one_object=one)
    print(f"{len(examples)} training examples from {args.scenes} scenes", flush=True)
    config = EvalConfig(split="validation", vqa_scenes=300)
    before = evaluate_vqa(backbone, config)
    if probe_items:
        backbone.network.eval()
        before.update(locate_accuracy(backbone, probe_items))
        if isinstance(backbone, AttendReferentsBackbone):
            before["referent_attention"] = backbone.referent_attention(probe_items[:200])
    role = None
    if args.mode == "lora":
        backbone.attach_roles()
        role = "solver"

    def batches():
        rng = random.Random(1)
        while True:
            yield [rng.choice(examples) for _ in range(64)]

    start = time.time()
    first: list[float] = []
    with backbone.role(role) if role else contextlib.nullcontext():
        if args.locate_first:
            def locate_batches():
                rng = random.Random(2)
                while True:
                    yield [rng.choice(locate) for _ in range(64)]

            first = train(backbone, role, locate_batches(),
                          TrainConfig(steps=args.locate_first, lr=args.lr, warmup_steps=20))
            backbone.network.eval()
            print("after the locate curriculum:", locate_accuracy(backbone, probe_items), flush=True)
        losses = train(backbone, role, batches(), TrainConfig(steps=args.steps, lr=args.lr, warmup_steps=20))
        after = evaluate_vqa(backbone, config)
        if probe_items:
            backbone.network.eval()
            after.update(locate_accuracy(backbone, probe_items))
            if isinstance(backbone, AttendReferentsBackbone):
                after["referent_attention"] = backbone.referent_attention(probe_items[:200])
        if steps_items:
            backbone.network.eval()
            after["relation_steps_accuracy"] = relation_steps_accuracy(backbone, steps_items)
    row = dict(mode=args.mode, variant=args.variant, attend_referents=args.attend_referents,
               attend_at=args.attend_at, attend_layer=args.attend_layer, relation_steps=args.relation_steps, from_scratch=args.from_scratch, probe=args.probe,
               locate_first=args.locate_first, locate_objects=args.locate_objects,
               locate_first_loss_by_100_steps=[round(float(np.mean(first[i:i + 100])), 3)
                                               for i in range(0, len(first), 100)],
               scenes=args.scenes, examples=len(examples), steps=args.steps, lr=args.lr,
               families=args.families, loss_first=round(losses[0], 4), loss_last20=round(float(np.mean(losses[-20:])), 4),
               loss_by_100_steps=[round(float(np.mean(losses[i:i + 100])), 3) for i in range(0, len(losses), 100)],
               before={k: round(v, 3) for k, v in before.items()}, after={k: round(v, 3) for k, v in after.items()},
               train_s=round(time.time() - start))
    print(json.dumps(row), flush=True)
    with (ROOT / "benchmarks" / "results" / "relation_learnability.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
