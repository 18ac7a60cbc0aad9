"""Backbones by name: a lazy name -> import path dict, so unused backbones cost no import.

    backbone = load_backbone("models/checkpoints/shapes-base")     # any saved checkpoint
    backbone = create_backbone("shapes", seed=0)                   # fresh random init
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from models.protocol import Backbone

BACKBONES = {
    "shapes": "models.shapes_backbone:ShapesBackbone",
}


def backbone_class(name: str) -> type:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(sorted(BACKBONES))}")
    module, attr = BACKBONES[name].split(":")
    return getattr(importlib.import_module(module), attr)


def load_backbone(checkpoint: str | Path) -> Backbone:
    """Load any saved checkpoint folder; its config.json names the backbone."""
    config_file = Path(checkpoint) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint} (no config.json)")
    name = json.loads(config_file.read_text()).get("backbone", "")
    return backbone_class(name).load(checkpoint)


def create_backbone(name: str, seed: int, size: str = "default") -> Backbone:
    """A freshly initialised backbone; size "tiny" builds the unit-test configuration."""
    cls = backbone_class(name)
    config_cls = cls.config_class
    config = config_cls.tiny() if size == "tiny" else config_cls()
    return cls.create(config, seed=seed)
