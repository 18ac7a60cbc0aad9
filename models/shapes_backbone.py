"""The embedded tiny unified backbone: one LlamaForCausalLM over text words and image codes.

Understanding and autoregressive image generation share one transformer (Chameleon/Emu3
style). Images are 16 tokens of the world's exact 8x8 patch codebook; a learned row and
column embedding is added to every image token because 1-D positions alone leave
left/right relations at chance. The roles are three peft LoRA adapters on the frozen base;
with adapters disabled the base is the KL/ratio reference.

    backbone = ShapesBackbone.create(ShapesConfig.tiny(), seed=0)
    backbone.attach_roles()
    answers = backbone.solve([SolveRequest(image, "how many objects are there ?")], seed=0)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from peft import (
    LoraConfig,
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    set_peft_model_state_dict,
)
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from models.protocol import ADAPTER_INIT_SEED, ROLES, SolveRequest, SolveResult, TrainingExample
from models.referent_attention import attention_log_weights
from models.relation_reading import ATTEND_WEIGHT, final_answer, step_candidates, with_position_channels
from models.sampling import Seeds, full_entropy, row_seeds, sample_next
from models.vocabulary import Vocabulary
from models.weight_checks import check_shapes
from world import codebook
from world.scenes import GRID

STE_TOKENS = 5  # METHOD.md: entropy of the first 5 answer tokens
MAX_NEW = {"answer": 4, "ask": 16, "spec": 40, "caption": 24}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class ShapesConfig:
    """Size of the embedded backbone; `hidden_size` is the complexity dial."""

    hidden_size: int = 128
    n_layers: int = 4
    n_heads: int = 4
    intermediate_size: int = 384
    max_positions: int = 128
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    chunk_size: int = 512  # rows per forward pass in batched inference
    # Relation reading (see `relation_reading.py`): each image token's cell in hidden dimensions of its own,
    # relation answers trained and decoded as the comparison's steps ("one three yes"), and heads of the last
    # layer taught to attend, at <ans>, to each object a labeled example names. Off in checkpoints made before it.
    relation_reading: bool = False

    @classmethod
    def tiny(cls) -> "ShapesConfig":
        """A few-thousand-parameter model for unit tests."""
        return cls(hidden_size=32, n_layers=2, n_heads=2, intermediate_size=64, lora_r=4, lora_alpha=8)


class ShapesNetwork(nn.Module):
    """LlamaForCausalLM plus 2-D (row, column) embeddings added to image tokens."""

    def __init__(self, config: ShapesConfig, vocab_size: int):
        super().__init__()
        llama = LlamaConfig(
            vocab_size=vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
            num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads,
            num_key_value_heads=config.n_heads, max_position_embeddings=config.max_positions,
            tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        )
        llama._attn_implementation = "sdpa"
        self.lm: LlamaForCausalLM | PeftModel = LlamaForCausalLM(llama)
        self.rows = nn.Embedding(GRID, config.hidden_size)
        self.cols = nn.Embedding(GRID, config.hidden_size)
        nn.init.normal_(self.rows.weight, std=0.02)
        nn.init.normal_(self.cols.weight, std=0.02)
        # A linear patch encoder (ViT-style) over each code's pixels: colour and shape become
        # linearly readable, so understanding generalises across the 253 codes.
        pixels = torch.tensor(codebook.codebook(), dtype=torch.float32).reshape(codebook.N_CODES, -1) / 255.0
        self.register_buffer("code_pixels", pixels, persistent=False)
        self.patch = nn.Linear(pixels.shape[1], config.hidden_size)
        self.image_offset = vocab_size - codebook.N_CODES
        self.position_channels = config.relation_reading

    def embed(self, ids: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        x = self.lm.get_input_embeddings()(ids)
        is_image = (cells >= 0).unsqueeze(-1)
        c = cells.clamp(min=0)
        codes = (ids - self.image_offset).clamp(min=0, max=codebook.N_CODES - 1)
        patch = self.patch(self.code_pixels[codes])
        if self.position_channels:
            patch = with_position_channels(patch, c)
        visual = self.rows(c // GRID) + self.cols(c % GRID) + patch
        return x + is_image * visual

    def forward(self, ids, cells, attention_mask, position_ids, cache=None, hidden=False):
        out = self.lm(inputs_embeds=self.embed(ids, cells), attention_mask=attention_mask,
                      position_ids=position_ids, cache=cache, use_cache=cache is not None,
                      output_hidden_states=hidden)
        return out


@dataclass(frozen=True)
class _Batch:
    ids: torch.Tensor
    cells: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    loss_mask: torch.Tensor


class ShapesBackbone:
    """The embedded shapes-world unified model behind the `Backbone` protocol."""

    name = "shapes"
    paradigm = "autoregressive"  # how the Generator draws: image tokens (the latent subclasses: flow, diffusion)
    image_size = 32
    config_class = ShapesConfig

    def __init__(self, config: ShapesConfig, vocab: Vocabulary, network: ShapesNetwork):
        self.config = config
        self.vocab = vocab
        self.network = network.eval()
        self.roles_attached = isinstance(network.lm, PeftModel)
        v = len(vocab)
        lo, hi = vocab.word_id_range()
        self._text_allowed = torch.zeros(v, dtype=torch.bool)
        self._text_allowed[lo:hi] = True
        self._text_allowed[vocab.id("<eos>")] = True
        self._image_allowed = torch.zeros(v, dtype=torch.bool)
        self._image_allowed[vocab.image_offset:] = True
        self._found_steps: dict[tuple[bytes, str, str], str] = {}  # relation_reading: see _with_steps

    # ----- construction and persistence -------------------------------------------------
    @classmethod
    def create(cls, config: ShapesConfig, seed: int) -> "ShapesBackbone":
        torch.manual_seed(seed)
        vocab = Vocabulary.build()
        return cls(config, vocab, ShapesNetwork(config, len(vocab)))

    @classmethod
    def load(cls, path: Path | str) -> "ShapesBackbone":
        path = Path(path)
        config_file = path / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"no checkpoint at {path} (missing {config_file.name})")
        meta = json.loads(config_file.read_text())
        if meta.get("backbone") != cls.name:
            raise ValueError(f"checkpoint {path} is for backbone {meta.get('backbone')!r}, not {cls.name!r}")
        config = ShapesConfig(**meta["config"])
        vocab = Vocabulary.from_tokens(meta["vocab"])
        network = ShapesNetwork(config, len(vocab))
        _load_base(network, path / "base.safetensors")
        backbone = cls(config, vocab, network)
        backbone._attach_saved_roles(path, meta.get("roles", []))
        return backbone.eval()

    def _attach_saved_roles(self, path: Path, roles: list[str]) -> None:
        """Attach the role adapters and load the ones a checkpoint saved."""
        if roles:
            self.attach_roles()
            for role in roles:
                set_peft_model_state_dict(self.network.lm, load_file(path / f"adapter_{role}.safetensors"),
                                          adapter_name=role)

    def save(self, path: Path | str) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file(self._base_state_dict(), path / "base.safetensors")
        roles = list(ROLES) if self.roles_attached else []
        for role in roles:
            save_file(get_peft_model_state_dict(self.network.lm, adapter_name=role),
                      path / f"adapter_{role}.safetensors")
        meta = {"backbone": self.name, "config": asdict(self.config), "vocab": list(self.vocab.tokens),
                "roles": roles}
        (path / "config.json").write_text(json.dumps(meta, indent=1))

    def _base_state_dict(self) -> dict[str, torch.Tensor]:
        """Base weights under plain Llama names: LoRA weights and the tied lm_head left out."""
        out = {}
        for name, tensor in self.network.state_dict().items():
            if "lora_" in name:
                continue
            name = name.replace("lm.base_model.model.", "lm.").replace(".base_layer.", ".")
            if name != "lm.lm_head.weight":
                out[name] = tensor.detach().clone().contiguous()
        return out

    def attach_roles(self) -> None:
        """Attach the role adapters with a fixed seed: every process (and every data-parallel rank) that
        attaches them to the same base gets the same initial adapters."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ADAPTER_INIT_SEED)
            self._attach_roles()

    def _attach_roles(self) -> None:
        """Add the proposer/solver/generator LoRA adapters (zero-initialised) on the frozen base."""
        if self.roles_attached:
            return
        for p in self.network.parameters():
            p.requires_grad_(False)
        lora = LoraConfig(r=self.config.lora_r, lora_alpha=self.config.lora_alpha,
                          lora_dropout=self.config.lora_dropout, target_modules=LORA_TARGETS)
        self.network.lm = get_peft_model(self.network.lm, lora, adapter_name=ROLES[0])
        for role in ROLES[1:]:
            self.network.lm.add_adapter(role, lora)
        self.roles_attached = True
        self.network.eval()  # new LoRA dropout modules start in training mode

    def eval(self) -> "ShapesBackbone":
        self.network.eval()
        return self

    def trainable_parameters(self, role: str | None) -> list[nn.Parameter]:
        if role is None:
            if self.roles_attached:
                raise ValueError("the base is frozen once roles are attached; train a role instead")
            return list(self.network.parameters())
        self._check_role(role)
        return [p for n, p in self.network.named_parameters() if f".{role}." in n and "lora_" in n]

    # ----- role switching ---------------------------------------------------------------
    def _check_role(self, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
        if not self.roles_attached:
            raise ValueError("this backbone has no role adapters yet; call attach_roles() first")

    @contextlib.contextmanager
    def role(self, role: str | None) -> Iterator[None]:
        """Run under a role's adapter, or under the reference base when role is None."""
        if not self.roles_attached:
            yield
            return
        if role is None:
            with self.network.lm.disable_adapter():
                yield
            return
        self._check_role(role)
        self.network.lm.set_adapter(role)
        for name, p in self.network.named_parameters():
            if "lora_" in name:
                p.requires_grad_(f".{role}." in name)
        yield

    # ----- sequence building ------------------------------------------------------------
    def _image_tokens(self, image: np.ndarray) -> tuple[list[int], list[int]]:
        if image.shape != (self.image_size, self.image_size, 3):
            raise ValueError(f"image of shape {image.shape} given; the shapes backbone takes "
                             f"({self.image_size}, {self.image_size}, 3) uint8 arrays")
        codes = codebook.encode(image)
        v = self.vocab
        ids = [v.id("<img>")] + v.image_ids(codes) + [v.id("</img>")]
        return ids, [-1] + list(range(len(codes))) + [-1]

    def _prefix(self, kind: str, image: np.ndarray | None, text: str = "", framing: str = "canonical"):
        v = self.vocab
        ids, cells = [v.id("<bos>")], [-1]
        if kind == "t2i":
            ids += [v.id("<gen>")] + v.encode_text(text) + [v.id("<img>")]
            return ids, cells + [-1] * (len(ids) - 1)
        if kind == "embed_text":
            ids += [v.id("<emb>")] + v.encode_text(text)
            return ids, cells + [-1] * (len(ids) - 1)
        img_ids, img_cells = self._image_tokens(image)
        ids, cells = ids + img_ids, cells + img_cells
        if kind == "vqa":
            tail = [v.id("<vqa>")] + v.encode_text(text) + [v.framing_id(framing), v.id("<ans>")]
        elif kind == "vqa_shared":  # everything a question's N samples have in common
            tail = [v.id("<vqa>")] + v.encode_text(text)
        elif kind in ("caption", "ask", "spec"):
            tail = [v.id({"caption": "<cap>", "ask": "<ask>", "spec": "<spec>"}[kind])]
        elif kind == "embed_image":
            tail = []
        else:
            raise ValueError(f"unknown example kind {kind!r}")
        return ids + tail, cells + [-1] * len(tail)

    def _target(self, example: TrainingExample) -> tuple[list[int], list[int]]:
        if example.kind == "t2i":
            codes = codebook.encode(example.target_image)
            return self.vocab.image_ids(codes) + [self.vocab.id("</img>")], list(range(len(codes))) + [-1]
        text = example.target
        if example.steps and example.kind == "vqa" and self.config.relation_reading:
            text = f"{example.steps} {text}"
        ids = self.vocab.encode_text(text) + [self.vocab.id("<eos>")]
        return ids, [-1] * len(ids)

    def _pad(self, rows: list[tuple[list[int], list[int], list[int]]]) -> _Batch:
        """Left-pad (ids, cells, loss flags) rows into one batch."""
        width = max(len(r[0]) for r in rows)
        if width > self.config.max_positions:
            raise ValueError(f"sequence of {width} tokens exceeds max_positions={self.config.max_positions}")
        n = len(rows)
        ids = torch.zeros(n, width, dtype=torch.long)
        cells = torch.full((n, width), -1, dtype=torch.long)
        mask = torch.zeros(n, width, dtype=torch.long)
        loss = torch.zeros(n, width, dtype=torch.bool)
        for i, (r_ids, r_cells, r_loss) in enumerate(rows):
            k = len(r_ids)
            ids[i, width - k:] = torch.tensor(r_ids)
            cells[i, width - k:] = torch.tensor(r_cells)
            mask[i, width - k:] = 1
            loss[i, width - k:] = torch.tensor(r_loss, dtype=torch.bool)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return _Batch(ids, cells, mask, positions, loss)

    # ----- decoding ---------------------------------------------------------------------
    @torch.no_grad()
    def _decode(self, prefixes: list[tuple[list[int], list[int]]], max_new: int, image_mode: bool,
                temperature: list[float], top_p: list[float], seed: int | list[int], desc: str = "decode",
                branches: list[tuple[int, list[int]]] | None = None):
        """Batched KV-cached decoding; returns token ids and full-vocab entropies per row.

        Without `branches` row i decodes after prefixes[i]. With `branches`, row i is
        (prefix index, suffix ids): rows sharing a prefix reuse its KV cache, so the image and
        question of N Solver samples are encoded once and only each sample's suffix (its
        framing) is run per row. Suffixes of one call have equal lengths. `seed` is one seed for
        the call, or one per row (then a row's draws do not depend on the other rows).
        """
        if branches is None:
            branches = [(i, []) for i in range(len(prefixes))]
        keys = None if isinstance(seed, int) else torch.tensor(seed, dtype=torch.long)
        if keys is not None and len(keys) != len(branches):
            raise ValueError(f"{len(keys)} row seeds for {len(branches)} rows")
        generator = torch.Generator().manual_seed(seed) if keys is None else None
        tokens: list[list[int]] = []
        entropies: list[list[float]] = []
        step = self.config.chunk_size
        starts = range(0, len(branches), step)
        for start in tqdm(starts, desc=desc, unit="batch", disable=len(starts) < 4, leave=False):
            rows = branches[start:start + step]
            used = sorted({p for p, _ in rows})
            local = {p: i for i, p in enumerate(used)}
            t, h = self._decode_chunk([prefixes[p] for p in used], [local[p] for p, _ in rows],
                                      [suffix for _, suffix in rows], max_new, image_mode,
                                      torch.tensor(temperature[start:start + step]),
                                      torch.tensor(top_p[start:start + step]), generator,
                                      None if keys is None else keys[start:start + step])
            tokens += t
            entropies += h
        return tokens, entropies

    def _decode_chunk(self, shared, row_prefix, suffixes, max_new, image_mode, temperature, top_p, generator,
                      keys=None):
        batch = self._pad([(ids, cells, [False] * len(ids)) for ids, cells in shared])
        n = len(row_prefix)
        eos = self.vocab.id("<eos>")
        allowed = (self._image_allowed if image_mode else self._text_allowed).expand(n, -1)
        cache = DynamicCache()
        out = self.network(batch.ids, batch.cells, batch.mask, batch.positions, cache=cache)
        index = torch.tensor(row_prefix)
        logits, cache = out.logits[index, -1], out.cache
        if len(shared) != n or row_prefix != list(range(n)):
            cache.batch_select_indices(index)
        mask, pos = batch.mask[index], batch.positions[index, -1:]
        width = {len(s) for s in suffixes}
        if width != {0}:
            if len(width) != 1:
                raise ValueError(f"suffixes of one decoding call must have equal lengths, got {sorted(width)}")
            k = width.pop()
            mask = torch.cat([mask, torch.ones(n, k, dtype=torch.long)], 1)
            positions = pos + torch.arange(1, k + 1)
            out = self.network(torch.tensor(suffixes), torch.full((n, k), -1), mask, positions, cache=cache)
            logits, cache, pos = out.logits[:, -1], out.cache, positions[:, -1:]
        done = torch.zeros(n, dtype=torch.bool)
        picked, ents = [], []
        for k in range(max_new):
            ents.append(full_entropy(logits))
            nxt = sample_next(logits, allowed, temperature, top_p, generator, keys, step=k)
            nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
            picked.append(nxt)
            done |= nxt == eos
            if bool(done.all()) or k == max_new - 1:
                break
            cells = torch.full((n, 1), k if image_mode else -1, dtype=torch.long)
            mask = torch.cat([mask, torch.ones(n, 1, dtype=torch.long)], 1)
            pos = pos + 1
            out = self.network(nxt.unsqueeze(1), cells, mask, pos, cache=cache)
            logits, cache = out.logits[:, -1], out.cache
        ids = torch.stack(picked, 1).tolist()
        hs = torch.stack(ents, 1).tolist()
        rows_t, rows_h = [], []
        for row_ids, row_h in zip(ids, hs):
            length = row_ids.index(eos) if eos in row_ids else len(row_ids)
            rows_t.append(row_ids[:length])
            rows_h.append(row_h[:max(length, 1)])
        return rows_t, rows_h

    # ----- the protocol -----------------------------------------------------------------
    def propose_questions(self, images, n_per_image, temperature, seed):
        with self.role("proposer"):
            prefixes = [self._prefix("ask", im) for im in images for _ in range(n_per_image)]
            toks, _ = self._decode(prefixes, MAX_NEW["ask"], False, [temperature] * len(prefixes),
                                   [1.0] * len(prefixes), _seeds(seed, len(images), n_per_image), desc="propose")
        texts = [self.vocab.decode_text(t) for t in toks]
        return [texts[i * n_per_image:(i + 1) * n_per_image] for i in range(len(images))]

    def propose_specs(self, images, temperature, seed):
        with self.role("proposer"):
            prefixes = [self._prefix("spec", im) for im in images]
            toks, _ = self._decode(prefixes, MAX_NEW["spec"], False, [temperature] * len(prefixes),
                                   [1.0] * len(prefixes), _seeds(seed, len(images)), desc="specs")
        return [self.vocab.decode_text(t) for t in toks]

    def solve(self, requests: list[SolveRequest], seed: int) -> list[SolveResult]:
        shared: dict[tuple[bytes, str], int] = {}
        prefixes, branches = [], []
        for r in requests:
            key = (hashlib.sha1(r.image.tobytes()).digest(), r.question)
            if key not in shared:
                shared[key] = len(prefixes)
                prefixes.append(self._prefix("vqa_shared", r.image, r.question))
            branches.append((shared[key], [self.vocab.framing_id(r.framing), self.vocab.id("<ans>")]))
        with self.role("solver"):
            toks, ents = self._decode(prefixes, MAX_NEW["answer"], False, [r.temperature for r in requests],
                                      [r.top_p for r in requests], _seeds(seed, len(requests)), desc="solve",
                                      branches=branches)
        texts = [self.vocab.decode_text(t) for t in toks]
        if self.config.relation_reading:
            texts = [final_answer(t) for t in texts]
        return [SolveResult(t, tuple(h[:STE_TOKENS])) for t, h in zip(texts, ents)]

    def caption(self, images):
        with self.role("solver"):
            prefixes = [self._prefix("caption", im) for im in images]
            toks, _ = self._decode(prefixes, MAX_NEW["caption"], False, [0.0] * len(prefixes),
                                   [1.0] * len(prefixes), seed=0, desc="caption")
        return [self.vocab.decode_text(t) for t in toks]

    def generate_images(self, prompts, n_per_prompt, temperature, seed):
        with self.role("generator"):
            prefixes = [self._prefix("t2i", None, p) for p in prompts for _ in range(n_per_prompt)]
            toks, _ = self._decode(prefixes, codebook.TOKENS_PER_IMAGE, True, [temperature] * len(prefixes),
                                   [1.0] * len(prefixes), _seeds(seed, len(prompts), n_per_prompt), desc="generate")
        off = self.vocab.image_offset
        images = [codebook.decode([t - off for t in row]) for row in toks]
        return [images[i * n_per_prompt:(i + 1) * n_per_prompt] for i in range(len(prompts))]

    @torch.no_grad()
    def _embed(self, prefixes) -> np.ndarray:
        out_rows = []
        with self.role(None):
            for start in range(0, len(prefixes), self.config.chunk_size):
                chunk = prefixes[start:start + self.config.chunk_size]
                batch = self._pad([(ids, cells, [False] * len(ids)) for ids, cells in chunk])
                hidden = self.network(batch.ids, batch.cells, batch.mask, batch.positions, hidden=True).hidden_states[-1]
                m = batch.mask.unsqueeze(-1).float()
                out_rows.append(((hidden * m).sum(1) / m.sum(1)).numpy())
        return np.concatenate(out_rows) if out_rows else np.zeros((0, self.config.hidden_size), np.float32)

    def embed_texts(self, texts):
        return self._embed([self._prefix("embed_text", None, t) for t in texts])

    def embed_images(self, images):
        return self._embed([self._prefix("embed_image", im) for im in images])

    def unknown_words(self, texts):
        return [self.vocab.unknown_words(t) for t in texts]

    def example_nll(self, role: str | None, examples: list[TrainingExample]) -> torch.Tensor:
        if not self.config.relation_reading:
            return self._token_nll(role, self._rows(examples))
        examples = self._with_steps(role, examples)
        rows = self._rows(examples)
        if not (self.network.training and any(ex.attend for ex in examples)):
            return self._token_nll(role, rows)
        with attention_log_weights(self.network.lm, self.config.n_layers - 1) as captured:
            nll = self._token_nll(role, rows)
        return nll + ATTEND_WEIGHT * self._attention_loss(captured[0], examples, rows)

    def _rows(self, examples: list[TrainingExample]) -> list[tuple[list[int], list[int], list[bool]]]:
        rows = []
        for ex in examples:
            p_ids, p_cells = self._prefix(ex.kind, ex.image, ex.prompt, ex.framing)
            t_ids, t_cells = self._target(ex)
            rows.append((p_ids + t_ids, p_cells + t_cells, [False] * len(p_ids) + [True] * len(t_ids)))
        return rows

    def _token_nll(self, role: str | None, rows: list[tuple[list[int], list[int], list[bool]]]) -> torch.Tensor:
        batch = self._pad(rows)
        with self.role(role):
            logits = self.network(batch.ids, batch.cells, batch.mask, batch.positions).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1)
        target = batch.ids[:, 1:]
        tok_nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        flags = batch.loss_mask[:, 1:].float()
        return (tok_nll * flags).sum(1) / flags.sum(1)

    def _attention_loss(self, log_weights: torch.Tensor, examples: list[TrainingExample],
                        rows: list[tuple[list[int], list[int], list[bool]]]) -> torch.Tensor:
        """Per example, the mean of -log(attention weight) that head k of the supervised layer puts, at <ans>, on
        the image token of the k-th cell in `attend` (0 for an example without cells). Rows are left-padded to
        the batch's width; an image's cells start 2 tokens into its row (<bos> <img>)."""
        width = log_weights.shape[-1]
        loss = torch.zeros(len(examples), dtype=log_weights.dtype)
        for i, (ex, (ids, _, flags)) in enumerate(zip(examples, rows)):
            if not ex.attend:
                continue
            prefix = flags.index(True)  # the row is its prefix, then its target (the loss flags)
            start = width - len(ids)
            terms = [log_weights[i, head, start + prefix - 1, start + 2 + cell]
                     for head, cell in enumerate(ex.attend[:self.config.n_heads])]
            loss[i] = -torch.stack(terms).mean()
        return loss

    def _with_steps(self, role: str | None, examples: list[TrainingExample]) -> list[TrainingExample]:
        """Relation examples labeled only yes/no get steps: among the cell pairs consistent with the label, the
        one the model finds most likely (under `role`, without gradient). Each (image, question, label) keeps the
        steps found on its first visit, so a policy and its reference score one target."""
        pending: dict[tuple[bytes, str, str], list[str]] = {}
        keys = []
        for ex in examples:
            key = None
            if ex.kind == "vqa" and not ex.steps and ex.image is not None:
                candidates = step_candidates(ex.prompt, ex.target)
                if candidates is not None:
                    key = (hashlib.sha1(ex.image.tobytes()).digest(), ex.prompt, ex.target)
                    if key not in self._found_steps:
                        pending[key] = candidates
            keys.append(key)
        if pending:
            found = {key: ex for key, ex in zip(keys, examples) if key in pending}
            scored = [(key, c, replace(found[key], steps=c)) for key, cands in pending.items() for c in cands]
            with torch.no_grad():
                nll = torch.cat([self._token_nll(role, self._rows([s for _, _, s in scored[i:i + 256]]))
                                 for i in range(0, len(scored), 256)]).tolist()
            best: dict[tuple[bytes, str, str], tuple[float, str]] = {}
            for (key, steps, _), value in zip(scored, nll):
                if key not in best or value < best[key][0]:
                    best[key] = (value, steps)
            self._found_steps.update({key: steps for key, (_, steps) in best.items()})
        return [ex if key is None else replace(ex, steps=self._found_steps[key]) for ex, key in zip(examples, keys)]


def _seeds(seed: Seeds, n_items: int, per_item: int = 1) -> int | list[int]:
    """The call's seed, or one seed per decoded row when the caller gave one per item."""
    rows = row_seeds(seed, n_items, per_item)
    return seed if rows is None else rows


def _shape_hint(key: str, got: tuple, want: tuple) -> str:
    if "embed_tokens" in key:
        return f" (vocabulary of {got[0]} tokens in the weights vs {want[0]} in config.json)"
    if "cell" in key or "row" in key or "col" in key:
        return " (image grid size differs)"
    return ""


def _load_base(network: ShapesNetwork, file: Path) -> None:
    state = load_file(file)
    check_shapes(state, network.state_dict(), file, _shape_hint)
    missing, unexpected = network.load_state_dict(state, strict=False)
    # lm_head is tied to the input embeddings, so it is the one key a base file leaves out.
    if unexpected or set(missing) - {"lm.lm_head.weight"}:
        raise ValueError(f"{file} does not match the configured network: missing {missing}, unexpected {unexpected}")
