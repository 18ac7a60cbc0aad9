"""Backbones by name: a lazy name -> import path dict, so unused backbones cost no import.

    backbone = load_backbone("models/checkpoints/shapes-base")     # any saved checkpoint
    backbone = create_backbone("shapes", seed=0)                   # fresh random init
    backbone_class("my_lab.bagel_adapter:BagelBackbone")           # any installed adapter, by import path

A backbone given by import path ("package.module:Class") plugs in without editing this file; it
must implement every capability of `models.protocol.Backbone`, which is checked before any round
starts (a backbone without image generation is refused with the capability's name).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from models.protocol import Backbone
from models.weight_checks import refuse_pickle_weights

BACKBONES = {
    "shapes": "models.shapes_backbone:ShapesBackbone",
    "shapes-diffusion": "models.shapes_latent_backbone:ShapesDiffusionBackbone",
    "shapes-flow": "models.shapes_latent_backbone:ShapesFlowBackbone",
    "janus": "models.janus_backbone:JanusBackbone",
    "composite": "models.composite_backbone:CompositeBackbone",
}


# Protocol method -> the capability it stands for (named in errors).
CAPABILITIES = {
    "propose_questions": "asking questions (Proposer)", "propose_specs": "writing text-to-image specs (Proposer)",
    "solve": "answering questions with token entropies (Solver)", "caption": "captioning (Solver)",
    "generate_images": "image generation (Generator)", "embed_texts": "text embeddings (cycle consistency)",
    "embed_images": "image embeddings (diversity)", "example_nll": "role likelihoods (fine-tuning)",
    "trainable_parameters": "trainable role parameters (fine-tuning)", "save": "saving checkpoints",
    "load": "loading checkpoints", "attach_roles": "LoRA role adapters",
    "unknown_words": "vocabulary coverage of evaluation inputs",
}


def missing_capabilities(cls: type) -> list[str]:
    return [f"{what} [{method}]" for method, what in CAPABILITIES.items() if not callable(getattr(cls, method, None))]


def backbone_class(name: str) -> type:
    """A registered name, or an import path "package.module:Class" of an installed adapter."""
    if name in BACKBONES:
        path = BACKBONES[name]
    elif ":" in name:
        path = name
    else:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(sorted(BACKBONES))}, or give an "
                         "import path such as my_package.my_module:MyBackbone")
    module, _, attr = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import backbone {path!r}: {exc}") from exc
    missing = missing_capabilities(cls)
    if missing:
        raise ValueError(f"backbone {path!r} lacks capabilities the flywheel needs: {'; '.join(missing)}")
    return cls


def load_backbone(checkpoint: str | Path) -> Backbone:
    """Load any saved checkpoint folder; its config.json names the backbone."""
    config_file = Path(checkpoint) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint} (no config.json)")
    refuse_pickle_weights(checkpoint)
    name = json.loads(config_file.read_text()).get("backbone", "")
    return backbone_class(name).load(checkpoint)


def create_backbone(name: str, seed: int, size: str = "default", **overrides) -> Backbone:
    """A freshly initialised backbone; size "tiny" builds the unit-test configuration; `overrides`
    replace config fields (e.g. freeze_understanding=True)."""
    import dataclasses

    cls = backbone_class(name)
    config_cls = cls.config_class
    config = config_cls.tiny() if size == "tiny" else config_cls()
    if size == "tiny" and not getattr(config, "tiny_words", True):
        from world.language import WORDS  # the real adapters' tiny tokenizers speak the embedded world's words

        config = dataclasses.replace(config, tiny_words=tuple(sorted(WORDS)))
    if overrides:
        config = dataclasses.replace(config, **overrides)
    return cls.create(config, seed=seed)
