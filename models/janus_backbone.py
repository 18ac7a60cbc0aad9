"""Janus / Janus-Pro behind the `Backbone` protocol, through transformers' `JanusForConditionalGeneration`.

    backbone = JanusBackbone.from_pretrained("/models/Janus-Pro-1B")   # a local folder; never downloads
    backbone = create_backbone("janus", seed=0, size="tiny")            # tiny random init (tests)

Understanding uses the model's own forward: the image's vision features fill the
<image_placeholder> positions between <begin_of_image> and <end_of_image>, and text comes from
`generate(generation_mode="text")`; STE is the entropy of the returned logits of the first answer
tokens (no extra pass). Generation uses `generate(generation_mode="image")` (classifier-free
guidance) and the VQ decoder. Roles are peft LoRA adapters on the language model; the base with
adapters disabled is the reference. Checkpoints are safetensors + config.json + tokenizer files;
`trust_remote_code` is never used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from peft import (
    LoraConfig,
    get_peft_model,
    get_peft_model_state_dict,
    set_peft_model_state_dict,
)
from PIL import Image

from models.instruction_prompts import FRAMING_TEXT, ROLE_PROMPTS, question_text
from models.pretrained_adapter import PretrainedAdapter, decoded_with_entropies
from models.protocol import ROLES, TrainingExample
from models.sampling import call_seed
from models.weight_checks import refuse_pickle_weights
from text.normal_form import normalize_text

SPECIAL = {"pad": "<pad>", "bos": "<bos>", "eos": "<eos>", "unk": "<unk>", "image": "<image_placeholder>",
           "boi": "<begin_of_image>", "eoi": "<end_of_image>"}


@dataclass(frozen=True)
class JanusBackboneConfig:
    image_size: int = 32  # the flywheel's stored image size (the model's own input size is in janus_config)
    max_new_tokens: int = 24
    ste_tokens: int = 5
    guidance_scale: float = 5.0
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    user_template: str = "<|User|>: {image}\n{text}\n\n<|Assistant|>:"
    janus_config: dict = field(default_factory=dict)
    # Words of the word-level tokenizer a fresh random-init model is built with (tests and smoke runs; real
    # checkpoints bring their own tokenizer). The registry gives the embedded world's words for size "tiny".
    tiny_words: tuple[str, ...] = ()

    @classmethod
    def tiny(cls) -> "JanusBackboneConfig":
        return cls(max_new_tokens=8, user_template="{image} {text} :", janus_config={})


def _tiny_tokenizer(tiny_words: tuple[str, ...]):
    """A word-level tokenizer over `tiny_words` and Janus's special tokens (built here)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted(set(tiny_words) | {"|", "=", "?", ":", ".", ",", "<|User|>", "<|Assistant|>"}
                   | {w.lower().strip(".,") for t in (*ROLE_PROMPTS.values(), *FRAMING_TEXT.values()) for w in t.split()})
    vocab = {tok: i for i, tok in enumerate([*SPECIAL.values(), *words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL["unk"]))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=SPECIAL["pad"], bos_token=SPECIAL["bos"],
                                   eos_token=SPECIAL["eos"], unk_token=SPECIAL["unk"],
                                   additional_special_tokens=[SPECIAL["image"], SPECIAL["boi"], SPECIAL["eoi"]])


def _tiny_janus_config(vocab_size: int, image_token_id: int) -> dict:
    from transformers import JanusConfig

    return JanusConfig(
        text_config={"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": vocab_size,
                     "max_position_embeddings": 256},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8, "num_image_tokens": 16, "projection_dim": 64},
        vq_config={"embed_dim": 8, "num_embeddings": 64, "base_channels": 32, "channel_multiplier": [1, 1, 1, 1],
                   "num_res_blocks": 1, "latent_channels": 32, "num_patches": 4, "image_token_embed_dim": 64,
                   "projection_dim": 64},
        image_token_id=image_token_id).to_dict()


class JanusBackbone(PretrainedAdapter):
    """Janus-family unified model (autoregressive image tokens) behind the `Backbone` protocol."""

    name = "janus"
    paradigm = "autoregressive"  # image tokens (VQ codes)
    config_class = JanusBackboneConfig

    def __init__(self, config: JanusBackboneConfig, network, tokenizer):
        self.config = config
        self.network = network.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        self.image_size = config.image_size
        self.roles_attached = False
        # Set by from_pretrained: checkpoints then store these local paths and the adapters only,
        # not another copy of the pretrained weights.
        self.source: dict | None = None
        self.ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in SPECIAL.items()
                    if tokenizer.convert_tokens_to_ids(v) is not None}
        if self.ids.get("image") != network.config.image_token_id:
            raise ValueError(f"tokenizer's {SPECIAL['image']} id {self.ids.get('image')} differs from the model's "
                             f"image_token_id {network.config.image_token_id}")
        self.n_image_tokens = network.config.vision_config.num_image_tokens
        self.vision_size = network.config.vision_config.image_size

    # ----- construction and persistence -------------------------------------------------
    @classmethod
    def create(cls, config: JanusBackboneConfig, seed: int) -> "JanusBackbone":
        from transformers import JanusConfig, JanusForConditionalGeneration

        torch.manual_seed(seed)
        tokenizer = _tiny_tokenizer(config.tiny_words)
        janus = config.janus_config or _tiny_janus_config(len(tokenizer), tokenizer.convert_tokens_to_ids(
            SPECIAL["image"]))
        config = JanusBackboneConfig(**{**asdict(config), "janus_config": janus})
        return cls(config, JanusForConditionalGeneration(JanusConfig.from_dict(janus)), tokenizer)

    @classmethod
    def from_pretrained(cls, path: str | Path, **overrides) -> "JanusBackbone":
        """Real weights from a local folder (e.g. a downloaded Janus-Pro-1B); never touches the network."""
        from transformers import AutoTokenizer, JanusForConditionalGeneration

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no Janus checkpoint at {path} (missing config.json)")
        refuse_pickle_weights(path)
        network = JanusForConditionalGeneration.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        config = JanusBackboneConfig(**{"janus_config": {}, **overrides})
        backbone = cls(config, network, tokenizer)
        backbone.source = {"path": str(path), **{k: v for k, v in overrides.items() if k == "image_size"}}
        return backbone

    @classmethod
    def load(cls, path: Path | str) -> "JanusBackbone":
        from transformers import (
            JanusConfig,
            JanusForConditionalGeneration,
            PreTrainedTokenizerFast,
        )

        path, meta, restored = cls._open_checkpoint(path)
        if restored is not None:
            return restored
        config = JanusBackboneConfig(**{**meta["config"], "lora_targets": tuple(meta["config"]["lora_targets"]),
                                        "tiny_words": tuple(meta["config"].get("tiny_words", ()))})
        network = JanusForConditionalGeneration(JanusConfig.from_dict(config.janus_config))
        cls._load_base_weights(network, path)
        return cls(config, network, PreTrainedTokenizerFast.from_pretrained(path / "tokenizer"))._restored(path, meta)

    def _tied_weight_names(self) -> set[str]:
        return {"lm_head.weight"} if self.network.config.tie_word_embeddings else set()

    def _save_parts(self, path: Path) -> dict:
        self.tokenizer.save_pretrained(path / "tokenizer")
        return {}

    # ----- roles --------------------------------------------------------------------------
    @property
    def _lm(self):
        return self.network.model.language_model

    def _role_state(self, role: str) -> dict[str, torch.Tensor]:
        return get_peft_model_state_dict(self._lm, adapter_name=role)

    def _load_role_state(self, role: str, state: dict[str, torch.Tensor]) -> None:
        set_peft_model_state_dict(self._lm, state, adapter_name=role)

    def _attach_roles(self) -> None:
        if not self._freeze_base():
            return
        lora = LoraConfig(r=self.config.lora_r, lora_alpha=self.config.lora_alpha,
                          target_modules=list(self.config.lora_targets))
        self.network.model.language_model = get_peft_model(self._lm, lora, adapter_name=ROLES[0])
        for role in ROLES[1:]:
            self._lm.add_adapter(role, lora)
        self.roles_attached = True
        self.network.eval()

    def _in_role(self, role: str | None):
        """Every role is a LoRA adapter of the language model (image generation included); None: the base."""
        return self._language_role(role)

    # ----- inputs -------------------------------------------------------------------------
    def _pixels(self, images: list[np.ndarray]) -> torch.Tensor:
        """Janus's preprocessing: resize to the vision tower's size, scale to [-1, 1] (mean 0.5, std 0.5)."""
        self._check_images(images)
        out = []
        for image in images:
            resized = np.asarray(Image.fromarray(image).resize((self.vision_size, self.vision_size), Image.BICUBIC))
            out.append(torch.from_numpy(resized.copy()).permute(2, 0, 1).float() / 127.5 - 1.0)
        return torch.stack(out).to(self.device, self.dtype)

    def _text_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _prompt_ids(self, text: str, with_image: bool) -> list[int]:
        """<bos> + the user template, the image as <boi> N x <image_placeholder> <eoi>."""
        before, _, after = self.config.user_template.partition("{image}")
        image = [self.ids["boi"], *[self.ids["image"]] * self.n_image_tokens, self.ids["eoi"]] if with_image else []
        return [self.ids["bos"], *self._text_ids(before), *image, *self._text_ids(after.format(text=text))]

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.ids["pad"], dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
        return ids.to(self.device), mask.to(self.device)

    # ----- understanding ------------------------------------------------------------------
    @torch.no_grad()
    def _generate_text(self, role, images, texts, temperature, top_p, seed) -> list[tuple[str, tuple[float, ...]]]:
        from transformers import GenerationConfig

        if not texts:
            return []
        ids, mask = self._left_pad([self._prompt_ids(t, True) for t in texts])
        torch.manual_seed(call_seed(seed))  # per-item seeds are folded: batch-dependent draws
        greedy = temperature <= 0
        config = GenerationConfig(do_sample=not greedy, temperature=None if greedy else temperature,
                                  top_p=None if greedy else top_p, max_new_tokens=self.config.max_new_tokens,
                                  pad_token_id=self.ids["pad"], eos_token_id=self.ids["eos"],
                                  bos_token_id=self.ids["bos"], output_logits=True, return_dict_in_generate=True)
        with self.role(role):
            out = self.network.generate(input_ids=ids, attention_mask=mask, pixel_values=self._pixels(images),
                                        generation_mode="text", generation_config=config)
        return decoded_with_entropies(out.sequences[:, ids.shape[1]:], out.logits, self.ids["eos"],
                                      self.tokenizer.decode, self.config.ste_tokens)

    # ----- generation ---------------------------------------------------------------------
    @torch.no_grad()
    def generate_images(self, prompts, n_per_prompt, temperature, seed):
        from transformers import GenerationConfig

        rows = [self._prompt_ids(normalize_text(p), False) + [self.ids["boi"]] for p in prompts
                for _ in range(n_per_prompt)]
        if not rows:
            return [[] for _ in prompts]
        ids, mask = self._left_pad(rows)
        torch.manual_seed(call_seed(seed))  # per-item seeds are folded: batch-dependent draws
        config = GenerationConfig(do_sample=True, temperature=max(temperature, 1e-3),
                                  guidance_scale=self.config.guidance_scale, max_new_tokens=self.n_image_tokens,
                                  pad_token_id=self.ids["pad"], bos_token_id=self.ids["bos"],
                                  generation_kwargs={"boi_token_id": self.ids["boi"]})
        with self.role("generator"):
            tokens = self.network.generate(input_ids=ids, attention_mask=mask, generation_mode="image",
                                           generation_config=config)
            pixels = self.network.decode_image_tokens(tokens[:, -self.n_image_tokens:])
        arrays = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
        images = [np.asarray(Image.fromarray(a).resize((self.image_size, self.image_size), Image.NEAREST))
                  for a in arrays]
        return [images[i * n_per_prompt:(i + 1) * n_per_prompt] for i in range(len(prompts))]

    # ----- embeddings (the base, adapters off) --------------------------------------------
    @torch.no_grad()
    def embed_texts(self, texts):
        if not texts:
            return np.zeros((0, self.network.config.text_config.hidden_size), np.float32)
        ids, mask = self._left_pad([[self.ids["bos"], *self._text_ids(normalize_text(t))] for t in texts])
        with self.role(None):
            hidden = self._lm(input_ids=ids, attention_mask=mask).last_hidden_state
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return pooled.float().cpu().numpy()

    @torch.no_grad()
    def embed_images(self, images):
        if not images:
            return np.zeros((0, self.network.config.text_config.hidden_size), np.float32)
        features = self.network.model.get_image_features(self._pixels(images)).pooler_output
        return features.mean(1).float().cpu().numpy()

    # ----- likelihoods --------------------------------------------------------------------
    def _target_text(self, example: TrainingExample) -> tuple[str, str]:
        if example.kind == "vqa":
            return question_text(example.prompt, example.framing), normalize_text(example.target)
        if example.kind in ("ask", "spec", "caption"):
            return ROLE_PROMPTS[example.kind], normalize_text(example.target)
        raise ValueError(f"unknown example kind {example.kind!r}")

    def _example_nll(self, example: TrainingExample) -> torch.Tensor:
        if example.kind == "t2i":
            prompt = torch.tensor([self._prompt_ids(normalize_text(example.prompt), False) + [self.ids["boi"]]],
                                  device=self.device)
            with torch.no_grad():
                codes = self.network.model.vqmodel.encode(self._pixels([example.target_image])).image_tokens
            codes = codes.reshape(1, -1)
            text = self._lm.get_input_embeddings()(prompt)
            image = self.network.prepare_embeddings_for_image_generation(codes[:, :-1])
            hidden = self._lm(inputs_embeds=torch.cat([text, image], 1)).last_hidden_state
            logits = self.network.model.generation_head(hidden[:, prompt.shape[1] - 1:])
            return F.cross_entropy(logits[0].float(), codes[0])
        text, target = self._target_text(example)
        prompt = self._prompt_ids(text, True)
        answer = self._text_ids(target) + [self.ids["eos"]]
        ids = torch.tensor([prompt + answer], device=self.device)
        logits = self.network(input_ids=ids, pixel_values=self._pixels([example.image])).logits
        start = len(prompt) - 1
        return F.cross_entropy(logits[0, start:start + len(answer)].float(), torch.tensor(answer, device=self.device))
