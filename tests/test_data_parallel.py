"""Data-parallel fine-tuning under torch.distributed: 2 gloo ranks on this CPU against 1 process with the
same global batch, and a rank that fails."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models.data_parallel import local_slice
from models.shapes_backbone import ShapesBackbone, ShapesConfig
from storage.image_files import encode_png
from storage.settings import Settings
from storage.tables import connect, upsert
from tasks.finetune import train_roles
from tasks.finetune_ranks import launch
from world.seed_set import seed_examples


def _lora(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(folder.glob("adapter_*.safetensors")):  # one file per role
        tensors.update({f"{file.stem}/{k}": v for k, v in load_file(file).items()})
    return tensors


@pytest.fixture
def tiny_round(asg_home):
    """A tiny base without LoRA dropout (so 1 and 2 ranks see the same noise) and stored training examples."""
    settings = Settings.from_env()
    base = asg_home / "base"
    ShapesBackbone.create(replace(ShapesConfig.tiny(), lora_dropout=0.0), seed=0).save(base)
    db = connect(settings)
    rows = [e for e in seed_examples(12, 0, ("canonical",)) if e["kind"] == "vqa"]
    image_rows, example_rows = {}, []
    for i, ex in enumerate(rows[:40]):
        png = encode_png(ex["image"])
        image_id = hashlib.sha256(png).hexdigest()[:32]
        image_rows[image_id] = {"image_id": image_id, "source": "test", "source_uri": f"test/{image_id}",
                                "width": 32, "height": 32, "png": png}
        example_rows.append({"example_id": f"r0:solver:{i:03d}", "round_idx": 0, "role": "solver", "kind": "vqa",
                             "image_table": "images", "image_key": image_id, "prompt": ex["prompt"],
                             "target": ex["target"], "framing": "canonical", "weight": 1.0 + (i % 3) * 0.5,
                             "source_id": f"q{i}", "reward": 1.0, "advantage": 0.0})
    upsert(db, "images", list(image_rows.values()))
    upsert(db, "training_examples", example_rows)
    args = dict(round_idx=0, checkpoint_uri=str(base), steps={"solver": 4}, lr=3e-3, batch_size=8,
                replay_fraction=0.0, seed_scenes=10, preset="verified", seed=0, seed_set_seed=0)
    return settings, args


def test_local_slices_cover_the_batch_once():
    batch = list(range(9))
    parts = [local_slice(batch, r, 4) for r in range(4)]
    assert parts == [[0, 1, 2], [3, 4], [5, 6], [7, 8]]


def test_two_gloo_ranks_match_one_process(tiny_round, asg_home):
    settings, args = tiny_round
    one, _ = train_roles(**args, output_uri=str(asg_home / "one"))
    two, _ = launch({**args, "output_uri": str(asg_home / "two")}, 2, settings, timeout_s=300)
    a, b = _lora(asg_home / "one"), _lora(asg_home / "two")
    assert a.keys() == b.keys() and a
    solver_b = [k for k in a if k.startswith("adapter_solver/") and "lora_B" in k]
    assert solver_b and all(float(a[k].abs().max()) > 0 for k in solver_b), "the solver adapter did not move"
    other_b = [k for k in a if not k.startswith("adapter_solver/") and "lora_B" in k]
    assert all(float(a[k].abs().max()) == 0 == float(b[k].abs().max()) for k in other_b)
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5, worst
    assert one["solver_examples"] == two["solver_examples"] == 40
    assert abs(one["solver_loss_last"] - two["solver_loss_last"]) < 1e-5


def test_a_failed_rank_fails_cleanly_and_publishes_nothing(tiny_round, asg_home, monkeypatch):
    settings, args = tiny_round
    out = asg_home / "never"
    monkeypatch.setenv("ASG_FAULT_RANK", "1")
    with pytest.raises(RuntimeError, match="injected failure on rank 1"):
        launch({**args, "output_uri": str(out)}, 2, settings, timeout_s=300)
    assert not out.exists()
    assert not [p for p in asg_home.iterdir() if p.name.startswith(".never")]


def test_a_fine_tune_that_dies_midway_continues_from_its_saved_progress(tiny_round, asg_home, monkeypatch, capsys):
    """The stage dies right after saving its progress at step 10 of 20; the re-run continues from step 10 and ends
    with exactly the adapter of a run that never died, then drops the saved progress."""
    import tasks.finetune as finetune

    settings, args = tiny_round
    args = {**args, "steps": {"solver": 20}}
    whole, _ = train_roles(**args, output_uri=str(asg_home / "whole"))
    real_save = finetune.save_progress

    def save_then_die(*a, step, **kw):
        real_save(*a, step=step, **kw)
        if step == 10:
            raise KeyboardInterrupt("killed after saving step 10")

    monkeypatch.setattr(finetune, "save_progress", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_roles(**args, output_uri=str(asg_home / "resumed"))
    assert not (asg_home / "resumed").exists()
    saved = list((Path(settings.objects_uri) / "progress" / "round-0").glob("finetune-*/solver.safetensors"))
    assert len(saved) == 1
    monkeypatch.setattr(finetune, "save_progress", real_save)
    capsys.readouterr()
    resumed, _ = train_roles(**args, output_uri=str(asg_home / "resumed"))
    assert "finetune solver: continuing from step 10 of 20" in capsys.readouterr().out
    a, b = _lora(asg_home / "whole"), _lora(asg_home / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    timeless = lambda m: {k: v for k, v in m.items() if not k.endswith("_seconds")}  # noqa: E731
    assert timeless(resumed) == timeless(whole)  # the losses of all 20 steps, the first 10 from the saved progress
    # where the stage's time went: setup, the role's reads and update (reads are part of it), the checkpoint
    assert {"setup_seconds", "solver_read_seconds", "solver_seconds", "save_seconds"} <= whole.keys()
    assert 0 <= whole["solver_read_seconds"] <= whole["solver_seconds"] and whole["save_seconds"] >= 0
    assert not list((Path(settings.objects_uri) / "progress" / "round-0").glob("finetune-*"))  # dropped
