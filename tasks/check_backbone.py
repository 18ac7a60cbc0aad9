"""Check stage: before a round writes anything, its checkpoint must exist and its backbone must have
every capability the flywheel uses (asking, solving with entropies, generating, embedding, training)."""

from __future__ import annotations

import json

from models.registry import backbone_class
from storage.checkpoints import local_checkpoint
from storage.settings import Settings
from tasks.stage import stage_task


@stage_task("check", "check-backbone")
def check_backbone(checkpoint_uri: str) -> str:
    """The backbone's name; raises ValueError naming a missing capability or FileNotFoundError."""
    path = local_checkpoint(checkpoint_uri, Settings.from_env())
    name = json.loads((path / "config.json").read_text()).get("backbone", "")
    backbone_class(name)
    return name
