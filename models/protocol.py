"""The batched protocol every unified backbone implements (lists in, lists out).

Images cross this boundary as uint8 arrays of shape (H, W, 3) and text as plain strings,
so no tokenizer or tensor type leaks into tasks. Roles are LoRA adapters named
`proposer`, `solver` and `generator`; the base with adapters off is the reference.

`seed` is an int for the whole call or a sequence with one int per item (image, request or
prompt). Stages pass per-item seeds derived from row keys; a backbone that honours them row by
row (the embedded ones) draws the same rows however a stage is sharded, others may fold them into
one call seed (`models.sampling.call_seed`).

A new backbone is one file in `models/` that implements `Backbone` and one line in
`models/registry.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

ROLES = ("proposer", "solver", "generator")
ADAPTER_INIT_SEED = 20260527  # role adapters start from the same weights in every process


@dataclass(frozen=True)
class SolveRequest:
    """One Solver sample: answer `question` about `image` under a framing and sampler setting.

    temperature 0 means greedy decoding.
    """

    image: np.ndarray
    question: str
    framing: str = "canonical"
    temperature: float = 1.0
    top_p: float = 1.0


@dataclass(frozen=True)
class SolveResult:
    """The answer text and the full-vocabulary entropy (nats) of its first answer tokens.

    The entropies come from the same logits the answer was sampled from, so STE costs no
    extra forward pass.
    """

    text: str
    token_entropies: tuple[float, ...]


@dataclass(frozen=True)
class TrainingExample:
    """A (prompt, target) pair for one role's likelihood.

    kind: "vqa" (image, question -> answer; `framing` picks the Solver framing),
    "caption" (image -> caption), "ask" (image -> question with its two validator answers),
    "spec" (image -> text-to-image prompt with checks) or "t2i" (prompt -> `target_image`).

    `draw` numbers the (t, noise) draws a stochastic loss (a denoiser's) scores the example on: a policy
    update keeps 0, so the policy and its cached reference see the same draws; imitation numbers every visit
    of an example, so a denoiser cannot memorise a prompt's few fixed draws instead of learning from its
    image (measured on the flow base, 480 steps on its own seed set: GenEval-2D 0.767 -> 0.659 with fixed
    draws, 0.754 with a draw per visit).

    `keep_prompt` stops an imitation visit from dropping its prompt (a denoiser's classifier-free-guidance
    dropout): a preference update compares two samples of one prompt, and both must be scored on it.

    `steps` and `attend` come only with the labeled seed set's examples (pretraining, and the seed replay every arm
    and the matched control train on), and a backbone may ignore them: `steps` is the reasoning the target follows
    from (a relation question's two cells, "one three"; a backbone that writes steps before its answer trains on
    "steps target"), `attend` the image cells the answer should attend to, one per object the prompt names (the
    embedded backbone's `relation_reading`, models/relation_reading.py).
    """

    kind: str
    image: np.ndarray | None = None
    prompt: str = ""
    target: str = ""
    target_image: np.ndarray | None = None
    framing: str = "canonical"
    weight: float = 1.0
    draw: int = 0
    keep_prompt: bool = False
    steps: str = ""
    attend: tuple[int, ...] = ()


@runtime_checkable
class Backbone(Protocol):
    """What the flywheel needs from a unified model. Every call is batched.

    Optional: `paradigm`, how the Generator draws ("autoregressive", "flow" or "diffusion"; read with
    "autoregressive" as the default): the fine-tune stage's `generator_update: auto` picks the preference update
    for a denoising generator (tasks/logic/presets.py generator_update)."""

    name: str
    image_size: int

    def propose_questions(self, images: list[np.ndarray], n_per_image: int, temperature: float,
                          seed: int) -> list[list[str]]:
        """Proposer: `n_per_image` raw outputs per image ("question ? | answer | answer")."""

    def propose_specs(self, images: list[np.ndarray], temperature: float, seed: int) -> list[str]:
        """Proposer: one raw spec per image ("prompt | question ? = answer | ...")."""

    def solve(self, requests: list[SolveRequest], seed: int) -> list[SolveResult]:
        """Solver: one sampled answer per request, with its first-token entropies."""

    def caption(self, images: list[np.ndarray]) -> list[str]:
        """Solver: a greedy caption per image."""

    def generate_images(self, prompts: list[str], n_per_prompt: int, temperature: float,
                        seed: int) -> list[list[np.ndarray]]:
        """Generator: `n_per_prompt` images per prompt."""

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Base model (adapters off): mean-pooled last hidden state per text, (n, d)."""

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        """Base model (adapters off): mean-pooled last hidden state per image, (n, d)."""

    def example_nll(self, role: str | None, examples: list[TrainingExample]):
        """Mean target-token negative log-likelihood per example (a differentiable tensor).

        role None evaluates the reference (the base with adapters disabled).
        """

    def trainable_parameters(self, role: str | None) -> list:
        """Parameters a role's update changes (role None: the whole base, for pretraining)."""

    def unknown_words(self, texts: list[str]) -> list[list[str]]:
        """Per text, the words of its normal form (`text.normal_form.normalize_text`) that the
        tokenizer cannot represent, i.e. maps to an unknown token (none for byte-level tokenizers)."""

    def save(self, path: Path) -> None:
        """Write safetensors weights plus a config file into the folder `path`."""
