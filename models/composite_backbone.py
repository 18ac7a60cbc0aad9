"""A composite unified model: any transformers image-text-to-text model (understanding) + a diffusers
diffusion transformer, VAE and scheduler (generation), behind the `Backbone` protocol.

    backbone = CompositeBackbone.from_pretrained("/models/llava-1.5-7b", "/models/sd3-medium")   # local folders
    backbone = create_backbone("composite", seed=0, size="tiny")     # LLaVA + SD3 transformer, random init

Like BLIP3o, the diffusion transformer is conditioned on the language model's own hidden states of the
prompt (the base, adapters off) through a small connector. The scheduler picks the paradigm:
`FlowMatchEulerDiscreteScheduler` (rectified flow, SD3/SANA/Flux-style; the default) or a DDPM/DDIM
scheduler (diffusion). Roles: proposer and solver are peft LoRA adapters on the language model, the
generator is a LoRA adapter on the diffusion transformer (diffusers' PEFT integration) plus the
connector. The generator's per-example loss is the denoising loss (flow matching: velocity; diffusion:
noise), so weighted imitation is reward-weighted denoising. Understanding, STE and checkpoints work
as in the Janus adapter; `trust_remote_code` is never used.
"""

from __future__ import annotations

import contextlib
import inspect
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

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
from torch import nn

from models.instruction_prompts import FRAMING_TEXT, ROLE_PROMPTS, question_text
from models.pretrained_adapter import PretrainedAdapter, decoded_with_entropies
from models.protocol import TrainingExample
from models.sampling import call_seed
from models.weight_checks import refuse_pickle_weights
from text.normal_form import normalize_text

UNDERSTANDING_ROLES = ("proposer", "solver")
DIT_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


@dataclass(frozen=True)
class CompositeConfig:
    image_size: int = 32  # the flywheel's stored image size
    max_new_tokens: int = 24
    ste_tokens: int = 5
    inference_steps: int = 20
    # Prompts are padded (and truncated) to this many tokens, as diffusers' pipelines pad T5/CLIP: the DiT attends
    # to the padding, so padding to the batch's longest prompt made an image depend on its batch-mates.
    prompt_tokens: int = 77
    loss_draws: int = 2  # (t, noise) draws per example in the denoising loss
    lora_r: int = 8
    lora_alpha: int = 16
    lm_lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    user_template: str = "USER: {image}\n{text} ASSISTANT:"
    # Words of the word-level tokenizer a fresh random-init model is built with (tests and smoke runs; real
    # checkpoints bring their own tokenizer). The registry gives the embedded world's words for size "tiny".
    tiny_words: tuple[str, ...] = ()

    @classmethod
    def tiny(cls) -> "CompositeConfig":
        return cls(max_new_tokens=8, inference_steps=4, prompt_tokens=16, user_template="{image} {text} :")


class _Network(nn.Module):
    """One module holding every part, so training loops can call train()/eval() and list parameters."""

    def __init__(self, vlm, transformer, vae, connector, pooled_connector):
        super().__init__()
        self.vlm, self.transformer, self.vae = vlm, transformer, vae
        self.connector, self.pooled_connector = connector, pooled_connector
        # The generator role's own (zero-initialised) correction of the connectors: part of its adapter,
        # so the reference (adapters off) keeps the base connectors.
        self.generator_connector = nn.Linear(connector.in_features, connector.out_features)
        self.generator_pooled_connector = nn.Linear(pooled_connector.in_features, pooled_connector.out_features)
        for layer in (self.generator_connector, self.generator_pooled_connector):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)


def _identity_or_random(d_in: int, d_out: int) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    if d_in == d_out:
        with torch.no_grad():
            layer.weight.copy_(torch.eye(d_in))
            layer.bias.zero_()
    return layer


def _tiny_parts(seed: int, tiny_words: tuple[str, ...]):
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
    )
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    torch.manual_seed(seed)
    extra = {w.lower().strip(".,:") for t in (*ROLE_PROMPTS.values(), *FRAMING_TEXT.values()) for w in t.split()}
    words = ["<pad>", "<bos>", "<eos>", "<unk>", "<image>", *sorted(set(tiny_words) | extra | {"|", "=", "?", ":"})]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>",
                                        eos_token="<eos>", unk_token="<unk>",
                                        extra_special_tokens={"image_token": "<image>"})
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default", image_token="<image>",
        num_additional_image_tokens=1)
    vlm = LlavaForConditionalGeneration(LlavaConfig(
        vision_config={"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
                       "projection_dim": 32},
        text_config={"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": len(words),
                     "max_position_embeddings": 256},
        image_token_index=4, vision_feature_select_strategy="default", vision_feature_layer=-1))
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
                                        num_attention_heads=2, joint_attention_dim=64, caption_projection_dim=16,
                                        pooled_projection_dim=64, out_channels=4, pos_embed_max_size=16)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16), latent_channels=4,
                        norm_num_groups=4, layers_per_block=1, sample_size=32)
    return vlm, processor, transformer, vae, FlowMatchEulerDiscreteScheduler()


class CompositeBackbone(PretrainedAdapter):
    """Understanding by a transformers VLM, generation by a diffusers transformer conditioned on it."""

    name = "composite"
    config_class = CompositeConfig

    def __init__(self, config: CompositeConfig, vlm, processor, transformer, vae, scheduler,
                 connector: nn.Module | None = None, pooled_connector: nn.Module | None = None):
        self.config = config
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.scheduler = scheduler
        self.image_size = config.image_size
        lm_dim = vlm.config.text_config.hidden_size
        connector = connector or _identity_or_random(lm_dim, transformer.config.joint_attention_dim)
        pooled_connector = pooled_connector or _identity_or_random(lm_dim, transformer.config.pooled_projection_dim)
        self.network = _Network(vlm, transformer, vae, connector, pooled_connector).eval()
        self.roles_attached = False
        # Set by from_pretrained: checkpoints then store these local paths and the adapters only,
        # not another copy of the pretrained weights.
        self.source: dict | None = None
        self._active_role: str | None = None
        self.flow_matching = "FlowMatch" in type(scheduler).__name__
        self.paradigm = "flow" if self.flow_matching else "diffusion"  # the fine-tune stage picks its update by it
        self.image_token = getattr(processor, "image_token", "<image>")

    # ----- construction and persistence -------------------------------------------------
    @classmethod
    def create(cls, config: CompositeConfig, seed: int) -> "CompositeBackbone":
        return cls(config, *_tiny_parts(seed, config.tiny_words))

    @classmethod
    def from_pretrained(cls, vlm_path: str | Path, pipeline_path: str | Path, **overrides) -> "CompositeBackbone":
        """Real weights from local folders: a transformers VLM and a diffusers pipeline (transformer/, vae/,
        scheduler/ subfolders). Nothing is downloaded."""
        from diffusers import AutoencoderKL, SD3Transformer2DModel
        from diffusers.schedulers import FlowMatchEulerDiscreteScheduler
        from transformers import AutoModelForImageTextToText, AutoProcessor

        for path in (vlm_path, pipeline_path):
            if not Path(path).is_dir():
                raise FileNotFoundError(f"no local model folder at {path}")
            refuse_pickle_weights(path)
        vlm = AutoModelForImageTextToText.from_pretrained(vlm_path, local_files_only=True, trust_remote_code=False)
        processor = AutoProcessor.from_pretrained(vlm_path, local_files_only=True, trust_remote_code=False)
        transformer = SD3Transformer2DModel.from_pretrained(pipeline_path, subfolder="transformer",
                                                           local_files_only=True)
        vae = AutoencoderKL.from_pretrained(pipeline_path, subfolder="vae", local_files_only=True)
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(pipeline_path, subfolder="scheduler",
                                                                    local_files_only=True)
        backbone = cls(CompositeConfig(**overrides), vlm, processor, transformer, vae, scheduler)
        backbone.source = {"vlm_path": str(vlm_path), "pipeline_path": str(pipeline_path),
                           **{k: v for k, v in overrides.items() if k == "image_size"}}
        return backbone

    def _tied_weight_names(self) -> set[str]:
        return {"vlm.lm_head.weight"} if self.network.vlm.config.get_text_config().tie_word_embeddings else set()

    def _save_parts(self, path: Path) -> dict:
        """The processor's files, and every part's architecture for config.json (load rebuilds them from it)."""
        self.processor.save_pretrained(path / "processor")
        return {"vlm": self.network.vlm.config.to_dict(), "transformer": dict(self.network.transformer.config),
                "vae": dict(self.network.vae.config), "scheduler": dict(self.scheduler.config),
                "scheduler_class": type(self.scheduler).__name__}

    @classmethod
    def load(cls, path: Path | str) -> "CompositeBackbone":
        import diffusers
        from diffusers import AutoencoderKL, SD3Transformer2DModel
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        path, meta, restored = cls._open_checkpoint(path)
        if restored is not None:
            return restored
        config = CompositeConfig(**{**meta["config"], "lm_lora_targets": tuple(meta["config"]["lm_lora_targets"]),
                                    "tiny_words": tuple(meta["config"].get("tiny_words", ()))})
        vlm_config = dict(meta["vlm"])
        vlm = AutoModelForImageTextToText.from_config(AutoConfig.for_model(**vlm_config))
        public = lambda d: {k: v for k, v in d.items() if not k.startswith("_")}  # noqa: E731
        transformer = SD3Transformer2DModel.from_config(public(meta["transformer"]))
        vae = AutoencoderKL.from_config(public(meta["vae"]))
        scheduler = getattr(diffusers, meta["scheduler_class"]).from_config(public(meta["scheduler"]))
        processor = AutoProcessor.from_pretrained(path / "processor", local_files_only=True)
        backbone = cls(config, vlm, processor, transformer, vae, scheduler)
        cls._load_base_weights(backbone.network, path)
        return backbone._restored(path, meta)

    # ----- roles --------------------------------------------------------------------------
    @property
    def _lm(self):
        return self.network.vlm.model.language_model

    def _attach_roles(self) -> None:
        if not self._freeze_base():
            return
        lm_lora = LoraConfig(r=self.config.lora_r, lora_alpha=self.config.lora_alpha,
                             target_modules=list(self.config.lm_lora_targets))
        self.network.vlm.model.language_model = get_peft_model(self._lm, lm_lora, adapter_name=UNDERSTANDING_ROLES[0])
        for role in UNDERSTANDING_ROLES[1:]:
            self._lm.add_adapter(role, lm_lora)
        self.network.transformer.add_adapter(LoraConfig(r=self.config.lora_r, lora_alpha=self.config.lora_alpha,
                                                        target_modules=DIT_LORA_TARGETS), adapter_name="generator")
        self.network.transformer.disable_adapters()
        self.roles_attached = True
        self.network.eval()

    def _generator_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.network.named_parameters()
                if (n.startswith("transformer.") and "lora_" in n) or n.startswith("generator_")]

    def _role_state(self, role: str) -> dict[str, torch.Tensor]:
        if role in UNDERSTANDING_ROLES:
            return get_peft_model_state_dict(self._lm, adapter_name=role)
        return {n: p.detach().contiguous() for n, p in self._generator_parameters()}

    def _load_role_state(self, role: str, state: dict[str, torch.Tensor]) -> None:
        if role in UNDERSTANDING_ROLES:
            set_peft_model_state_dict(self._lm, state, adapter_name=role)
        else:
            self.network.load_state_dict(state, strict=False)

    def _role_parameters(self, role: str) -> list:
        if role == "generator":
            return [p for _, p in self._generator_parameters()]
        return super()._role_parameters(role)

    @contextlib.contextmanager
    def _in_role(self, role: str | None) -> Iterator[None]:
        """proposer/solver: their LM adapter; generator: the DiT adapter over the base LM; None: the base."""
        transformer = self.network.transformer
        self._active_role = role
        if role == "generator":
            transformer.enable_adapters()
            transformer.set_adapter("generator")
        else:
            transformer.disable_adapters()
        try:
            with self._language_role(role if role in UNDERSTANDING_ROLES else None, prefix="vlm."):
                yield
        finally:
            transformer.disable_adapters()
            self._active_role = None

    # ----- understanding ------------------------------------------------------------------
    def _prompts(self, texts: list[str]) -> list[str]:
        return [self.config.user_template.format(image=self.image_token, text=t) for t in texts]

    def _inputs(self, images: list[np.ndarray], texts: list[str]) -> dict:
        self._check_images(images)
        inputs = self.processor(images=list(images), text=self._prompts(texts), return_tensors="pt", padding=True)
        inputs = inputs.to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return inputs

    @torch.no_grad()
    def _generate_text(self, role, images, texts, temperature, top_p, seed):
        from transformers import GenerationConfig

        if not texts:
            return []
        inputs = self._inputs(images, texts)
        torch.manual_seed(call_seed(seed))  # per-item seeds are folded: batch-dependent draws
        greedy = temperature <= 0
        tok = self.tokenizer
        config = GenerationConfig(do_sample=not greedy, temperature=None if greedy else temperature,
                                  top_p=None if greedy else top_p, max_new_tokens=self.config.max_new_tokens,
                                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                  output_logits=True, return_dict_in_generate=True)
        with self.role(role):
            out = self.network.vlm.generate(**inputs, generation_config=config)
        return decoded_with_entropies(out.sequences[:, inputs["input_ids"].shape[1]:], out.logits, tok.eos_token_id,
                                      tok.decode, self.config.ste_tokens)

    # ----- generation ---------------------------------------------------------------------
    def _condition(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The base language model's hidden states of the prompts' normal forms, through the connectors."""
        enc = self.tokenizer([normalize_text(p) for p in prompts], return_tensors="pt", padding="max_length",
                             max_length=self.config.prompt_tokens, truncation=True).to(self.device)
        with self._lm.disable_adapter() if self.roles_attached else contextlib.nullcontext():
            hidden = self._lm(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        mask = enc["attention_mask"][..., None].float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        net = self.network
        cond, pooled_cond = net.connector(hidden), net.pooled_connector(pooled)
        if self._active_role == "generator":
            cond, pooled_cond = cond + net.generator_connector(hidden), pooled_cond + net.generator_pooled_connector(pooled)
        return cond, pooled_cond

    def _latent_shape(self) -> tuple[int, int, int]:
        c = self.network.transformer.config
        return c.in_channels, c.sample_size, c.sample_size

    @torch.no_grad()
    def generate_images(self, prompts, n_per_prompt, temperature, seed):
        flat = [p for p in prompts for _ in range(n_per_prompt)]
        if not flat:
            return [[] for _ in prompts]
        generator = torch.Generator().manual_seed(call_seed(seed))
        latents = (torch.randn((len(flat), *self._latent_shape()), generator=generator) * max(temperature, 1e-3)
                   ).to(self.device, self.dtype)
        self.scheduler.set_timesteps(self.config.inference_steps)
        # Stochastic samplers (DDPM) draw their noise from the same seeded generator.
        step_options = {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters else {}
        with self.role("generator"):
            cond, pooled = self._condition(flat)
            for t in self.scheduler.timesteps:
                out = self.network.transformer(hidden_states=latents, encoder_hidden_states=cond,
                                               pooled_projections=pooled, timestep=t.expand(len(flat))).sample
                latents = self.scheduler.step(out, t, latents, **step_options).prev_sample
        pixels = self.network.vae.decode(latents).sample
        arrays = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        images = [np.asarray(Image.fromarray(a).resize((self.image_size, self.image_size), Image.NEAREST))
                  for a in arrays]
        return [images[i * n_per_prompt:(i + 1) * n_per_prompt] for i in range(len(prompts))]

    def _denoising_loss(self, prompt: str, image: np.ndarray, draw: int = 0) -> torch.Tensor:
        """Flow matching (velocity) or diffusion (noise) loss of one example, over (t, noise) draws fixed by the
        prompt and `draw` (TrainingExample.draw: 0 in policy updates, a new one per visit in imitation)."""
        vision = self.network.vae.config.sample_size
        pixels = torch.from_numpy(np.asarray(Image.fromarray(image).resize((vision, vision), Image.BICUBIC)).copy())
        pixels = (pixels.permute(2, 0, 1)[None].float() / 127.5 - 1.0).to(self.device, self.dtype)
        with torch.no_grad():
            x0 = self.network.vae.encode(pixels).latent_dist.mean
        draws = self.config.loss_draws
        generator = torch.Generator().manual_seed(zlib.crc32(normalize_text(prompt).encode()) + 1_000_003 * draw)
        noise = torch.randn((draws, *x0.shape[1:]), generator=generator).to(self.device, x0.dtype)
        x0 = x0.expand(draws, -1, -1, -1)
        cond, pooled = self._condition([prompt] * draws)
        if self.flow_matching:
            sigma = torch.rand(draws, generator=generator).clamp(0.02, 0.98).to(self.device, x0.dtype)
            noisy = (1 - sigma[:, None, None, None]) * x0 + sigma[:, None, None, None] * noise
            target, timestep = noise - x0, sigma * 1000
        else:
            steps = self.scheduler.config.num_train_timesteps
            timestep = torch.randint(0, steps, (draws,), generator=generator).to(self.device)
            noisy, target = self.scheduler.add_noise(x0, noise, timestep), noise
        pred = self.network.transformer(hidden_states=noisy, encoder_hidden_states=cond, pooled_projections=pooled,
                                        timestep=timestep.float()).sample
        return F.mse_loss(pred.float(), target.float())

    # ----- embeddings (the base) and likelihoods --------------------------------------------
    @torch.no_grad()
    def embed_texts(self, texts):
        if not texts:
            return np.zeros((0, self.network.vlm.config.text_config.hidden_size), np.float32)
        enc = self.tokenizer([normalize_text(t) for t in texts], return_tensors="pt", padding=True).to(self.device)
        with self.role(None):
            hidden = self._lm(**enc).last_hidden_state
        mask = enc["attention_mask"][..., None].float()
        return ((hidden * mask).sum(1) / mask.sum(1)).float().cpu().numpy()

    @torch.no_grad()
    def embed_images(self, images):
        if not images:
            return np.zeros((0, self.network.vlm.config.text_config.hidden_size), np.float32)
        pixels = self.processor.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.device, self.dtype)
        features = self.network.vlm.model.get_image_features(pixel_values=pixels)
        features = getattr(features, "pooler_output", features)
        if isinstance(features, (list, tuple)):
            features = torch.stack([f.reshape(-1, f.shape[-1]).mean(0) for f in features])
        elif features.dim() == 3:
            features = features.mean(1)
        return features.float().cpu().numpy()

    def _example_nll(self, example: TrainingExample) -> torch.Tensor:
        if example.kind == "t2i":
            return self._denoising_loss(example.prompt, example.target_image, example.draw)
        if example.kind == "vqa":
            text = question_text(example.prompt, example.framing)
        elif example.kind in ROLE_PROMPTS:
            text = ROLE_PROMPTS[example.kind]
        else:
            raise ValueError(f"unknown example kind {example.kind!r}")
        inputs = self._inputs([example.image], [text])
        answer = (self.tokenizer(normalize_text(example.target), add_special_tokens=False)["input_ids"]
                  + [self.tokenizer.eos_token_id])
        ids = torch.cat([inputs["input_ids"], torch.tensor([answer], device=self.device)], 1)
        logits = self.network.vlm(input_ids=ids, pixel_values=inputs["pixel_values"]).logits
        start = inputs["input_ids"].shape[1] - 1
        return F.cross_entropy(logits[0, start:start + len(answer)].float(), torch.tensor(answer, device=self.device))
