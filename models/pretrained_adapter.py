"""What every adapter of a real pretrained model (Janus, VLM + diffusers) shares: the role adapters' bookkeeping,
device and dtype plumbing, the text roles built on one `_generate_text`, the entropy of the first answer tokens,
checkpoint files of the adapters, and the per-example likelihood loop.

A subclass provides `network` (an nn.Module holding every part), `config` (with `ste_tokens`, `lora_r`,
`lora_alpha`), `tokenizer`, `_lm` (the peft-wrapped language model once roles are attached), `_attach_roles`,
`_role_state`, `_load_role_state`, `_in_role(role)` (a context manager), `_generate_text(role, images, texts, temperature, top_p, seed) -> [(text, entropies)]` and
`_example_nll(example)`, and for `save` `_tied_weight_names()` and `_save_parts(path) -> extra config.json
entries`. Nothing here imports the toy world.

    class MyBackbone(PretrainedAdapter): ...
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from models.instruction_prompts import ROLE_PROMPTS, question_text
from models.protocol import ADAPTER_INIT_SEED, ROLES, SolveRequest, SolveResult, TrainingExample
from models.tokenizer_words import tokenizer_unknown_words
from models.weight_checks import check_shapes


def first_token_entropies(logits: tuple[torch.Tensor, ...], row: int, length: int, ste_tokens: int) -> tuple[float, ...]:
    """Entropy (nats) of each of the first `ste_tokens` generated tokens of batch row `row` from `generate`'s
    per-step logits; at least one token even when the answer is empty (its end token's distribution)."""
    out = []
    for k in range(min(ste_tokens, max(1, length), len(logits))):
        logp = F.log_softmax(logits[k][row].float(), dim=-1)
        out.append(float(-(logp.exp() * logp).sum()))
    return tuple(out)


def decoded_with_entropies(sequences: torch.Tensor, logits: tuple[torch.Tensor, ...], eos_id: int, decode,
                           ste_tokens: int) -> list[tuple[str, tuple[float, ...]]]:
    """(text up to the first end token, its first tokens' entropies) for each row of newly generated tokens."""
    results = []
    for b in range(sequences.shape[0]):
        tokens = sequences[b].tolist()
        length = tokens.index(eos_id) if eos_id in tokens else len(tokens)
        results.append((decode(tokens[:length], skip_special_tokens=True).strip(),
                        first_token_entropies(logits, b, length, ste_tokens)))
    return results


class PretrainedAdapter:
    """The shared half of the real-model adapters behind the `Backbone` protocol."""

    roles_attached: bool
    source: dict | None

    # ----- roles --------------------------------------------------------------------------
    def attach_roles(self) -> None:
        """Attach the role adapters with a fixed seed: every process (and every data-parallel rank) that
        attaches them to the same base gets the same initial adapters."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ADAPTER_INIT_SEED)
            self._attach_roles()

    def _check_role(self, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
        if not self.roles_attached:
            raise ValueError("this backbone has no role adapters yet; call attach_roles() first")

    def _role_parameters(self, role: str) -> list:
        """The parameters of `role`'s adapter (a subclass adds parts outside the language model)."""
        return [p for n, p in self.network.named_parameters() if f".{role}." in n and "lora_" in n]

    def trainable_parameters(self, role: str | None) -> list:
        if role is None:
            if self.roles_attached:
                raise ValueError("the base is frozen once roles are attached; train a role instead")
            return list(self.network.parameters())
        self._check_role(role)
        return self._role_parameters(role)

    @contextlib.contextmanager
    def role(self, role: str | None) -> Iterator[None]:
        """Run under a role's adapter, or under the reference base when role is None (`_in_role` says how)."""
        if not self.roles_attached:
            yield
            return
        if role is not None:
            self._check_role(role)
        with self._in_role(role):
            yield

    @contextlib.contextmanager
    def _language_role(self, role: str | None, prefix: str = "") -> Iterator[None]:
        """Run the language model under `role`'s adapter (only its LoRA weights trainable), or the base for None."""
        if role is None:
            with self._lm.disable_adapter():
                yield
            return
        self._lm.set_adapter(role)
        for name, p in self.network.named_parameters():
            if "lora_" in name and name.startswith(prefix):
                p.requires_grad_(f".{role}." in name)
        yield

    # ----- device -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.network.parameters()).dtype

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None):
        """Move every part (e.g. `.to("cuda", torch.bfloat16)` on a GPU); inputs follow it."""
        self.network.to(device=device, dtype=dtype)
        return self

    def eval(self):
        self.network.eval()
        return self

    @staticmethod
    def _check_images(images) -> None:
        for image in images:
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"images must be uint8 (H, W, 3), got {image.dtype} shape {image.shape}")

    # ----- checkpoints --------------------------------------------------------------------
    def save(self, path: Path | str) -> None:
        """safetensors of the base (unless it came from a local pretrained folder, which the checkpoint then
        names instead of copying), the adapters, and the subclass's own files (tokenizer, processor)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.source is not None:
            self._save_adapters(path, source=self.source)
            return
        tied = self._tied_weight_names()
        save_file({k: v for k, v in self._base_weights(self.network).items() if k not in tied},
                  path / "base.safetensors")
        self._save_adapters(path, **self._save_parts(path))

    def _save_adapters(self, path: Path, **meta) -> None:
        """The role adapters' safetensors and config.json (`meta` adds to it); the base weights are the
        subclass's."""
        roles = list(ROLES) if self.roles_attached else []
        for role in roles:
            save_file(self._role_state(role), path / f"adapter_{role}.safetensors")
        (path / "config.json").write_text(json.dumps({"backbone": self.name, "config": asdict(self.config),
                                                      "roles": roles, **meta}, indent=1, default=str))

    def _freeze_base(self) -> bool:
        """Freeze every base weight before the adapters are added; False when they are attached already."""
        if self.roles_attached:
            return False
        for p in self.network.parameters():
            p.requires_grad_(False)
        return True

    @classmethod
    def _checkpoint_meta(cls, path: Path) -> dict:
        """A checkpoint's config.json, refused when it was written by another backbone."""
        meta = json.loads((path / "config.json").read_text())
        if meta.get("backbone") != cls.name:
            raise ValueError(f"checkpoint {path} is for backbone {meta.get('backbone')!r}, not {cls.name!r}")
        return meta

    @classmethod
    def _open_checkpoint(cls, path: Path | str):
        """(path, config.json, None) for a checkpoint with its own base weights, or (path, config.json, the
        restored backbone) for one that names a local pretrained folder."""
        path = Path(path)
        meta = cls._checkpoint_meta(path)
        restored = cls.from_pretrained(**meta["source"])._restored(path, meta) if meta.get("source") else None
        return path, meta, restored

    @staticmethod
    def _load_base_weights(network, path: Path) -> None:
        """base.safetensors into `network`, every tensor's shape checked first (tied weights may be absent)."""
        state = load_file(path / "base.safetensors")
        check_shapes(state, network.state_dict(), path / "base.safetensors")
        network.load_state_dict(state, strict=False)

    def _restored(self, path: Path, meta: dict):
        """This backbone with the role adapters a checkpoint saved attached."""
        if meta.get("roles"):
            self.attach_roles()
            for role in meta["roles"]:
                self._load_role_state(role, load_file(path / f"adapter_{role}.safetensors"))
        return self

    @staticmethod
    def _base_weights(network) -> dict[str, torch.Tensor]:
        """The base's weights under their plain names (LoRA weights left out)."""
        return {name.replace("base_model.model.", "").replace(".base_layer.", "."): tensor.contiguous()
                for name, tensor in network.state_dict().items() if "lora_" not in name}

    # ----- the text roles -----------------------------------------------------------------
    def propose_questions(self, images, n_per_image, temperature, seed):
        flat = [img for img in images for _ in range(n_per_image)]
        outs = self._generate_text("proposer", flat, [ROLE_PROMPTS["ask"]] * len(flat), temperature, 1.0, seed)
        return [[outs[i * n_per_image + k][0] for k in range(n_per_image)] for i in range(len(images))]

    def propose_specs(self, images, temperature, seed):
        return [t for t, _ in self._generate_text("proposer", images, [ROLE_PROMPTS["spec"]] * len(images),
                                                  temperature, 1.0, seed)]

    def solve(self, requests: list[SolveRequest], seed: int) -> list[SolveResult]:
        """One generate call per sampler setting (temperature, top-p), batched over the requests."""
        out: list[SolveResult | None] = [None] * len(requests)
        groups: dict[tuple[float, float], list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.temperature, r.top_p), []).append(i)
        for (temperature, top_p), index in sorted(groups.items()):
            texts = [question_text(requests[i].question, requests[i].framing) for i in index]
            for i, (text, ent) in zip(index, self._generate_text(
                    "solver", [requests[i].image for i in index], texts, temperature, top_p, seed)):
                out[i] = SolveResult(text, ent)
        return out  # type: ignore[return-value]

    def caption(self, images):
        return [t for t, _ in self._generate_text("solver", images, [ROLE_PROMPTS["caption"]] * len(images),
                                                  0.0, 1.0, 0)]

    def unknown_words(self, texts):
        return tokenizer_unknown_words(self.tokenizer, texts)

    # ----- likelihoods --------------------------------------------------------------------
    def example_nll(self, role: str | None, examples: list[TrainingExample]) -> torch.Tensor:
        with self.role(role):
            values = [self._example_nll(e) for e in examples]
        return torch.stack(values) if values else torch.zeros(0)
