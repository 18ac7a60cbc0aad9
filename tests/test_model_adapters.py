"""The adapters for real unified models, on tiny random-init configs built here (no download):
Janus through transformers' JanusForConditionalGeneration, and the composite of a transformers VLM
(LLaVA) with a diffusers SD3 transformer, VAE and flow-matching scheduler. For each: every protocol
call, one update of every role, persistence, and a whole tiny round through the same flow and tasks
as the embedded model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.protocol import Backbone, SolveRequest, TrainingExample
from models.registry import create_backbone, load_backbone
from models.training import TrainConfig, train
from world import splits
from world.render import render


@pytest.fixture(scope="module", params=["janus", "composite"])
def janus(request):
    b = create_backbone(request.param, seed=0, size="tiny")
    b.attach_roles()
    with torch.no_grad():  # non-zero LoRA B so that roles differ from the base
        for name, p in b.network.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2, generator=torch.Generator().manual_seed(len(name)))
    return b


def _images(n):
    return [render(splits.scene_at("seed", i, 0)) for i in range(n)]


def test_every_protocol_call_runs_through_the_real_classes(janus):
    from diffusers import SD3Transformer2DModel
    from transformers import JanusForConditionalGeneration, LlavaForConditionalGeneration

    assert isinstance(janus, Backbone)
    if janus.name == "janus":
        assert isinstance(janus.network, JanusForConditionalGeneration)
    else:
        assert isinstance(janus.network.vlm, LlavaForConditionalGeneration)
        assert isinstance(janus.network.transformer, SD3Transformer2DModel)
    images = _images(3)
    questions = janus.propose_questions(images, 2, 1.0, seed=0)
    assert [len(q) for q in questions] == [2, 2, 2] and all(isinstance(t, str) for q in questions for t in q)
    assert len(janus.propose_specs(images, 1.0, seed=0)) == 3
    requests = [SolveRequest(images[0], "how many objects are there ?", "observational", 1.0, 0.9),
                SolveRequest(images[1], "what color is the circle ?", temperature=0.0)]
    results = janus.solve(requests, seed=0)
    assert len(results) == 2
    for r in results:
        assert 1 <= len(r.token_entropies) <= 5
        assert all(0 <= h <= np.log(2 * len(janus.tokenizer)) for h in r.token_entropies)
    assert janus.solve(requests[1:], seed=1) == janus.solve(requests[1:], seed=2)  # greedy is deterministic
    generated = janus.generate_images(["a red circle", "two squares"], 2, 1.0, seed=0)
    assert [len(g) for g in generated] == [2, 2]
    assert all(im.shape == (32, 32, 3) and im.dtype == np.uint8 for g in generated for im in g)
    assert janus.embed_texts(["a red circle", "two squares"]).shape == (2, 64)
    assert janus.embed_images(images).shape == (3, 64)
    with pytest.raises(ValueError, match=r"uint8 \(H, W, 3\)"):
        janus.solve([SolveRequest(np.zeros((8, 8), np.uint8), "q ?")], seed=0)
    # Empty requests are answered the same way by both adapters (their shared base, models/pretrained_adapter.py).
    assert janus.solve([], seed=0) == [] and janus.caption([]) == [] and janus.propose_specs([], 1.0, seed=0) == []
    assert janus.example_nll("solver", []).shape == (0,)
    with pytest.raises(ValueError, match="unknown role 'critic'"):
        janus.trainable_parameters("critic")


def test_natural_text_reaches_the_tokenizer_in_the_worlds_spelling(janus):
    image = _images(1)[0]
    spaced = janus.solve([SolveRequest(image, "what color is the circle ?", temperature=0.0)], seed=0)
    assert janus.solve([SolveRequest(image, "What colour is the\u00a0 Circle?", temperature=0.0)], seed=0) == spaced
    np.testing.assert_allclose(janus.embed_texts(["A \u201cred\u201d circle."]), janus.embed_texts(["a red circle"]))
    assert janus.unknown_words(["What colour is the bench?", "a red circle", ""]) == [["bench"], [], []]


@pytest.mark.parametrize("role,examples", [
    ("solver", [TrainingExample("vqa", image=render(splits.scene_at("seed", 0, 0)), prompt="how many objects are there ?",
                                target="two", framing="analyst")]),
    ("proposer", [TrainingExample("ask", image=render(splits.scene_at("seed", 1, 0)),
                                  target="what color is the circle ? | red | blue")]),
    ("generator", [TrainingExample("t2i", prompt="a red circle", target_image=render(splits.scene_at("seed", 2, 0)))]),
])
def test_one_update_moves_only_that_roles_adapter(janus, role, examples):
    before = {n: p.detach().clone() for n, p in janus.network.named_parameters()}
    reference = janus.example_nll(None, examples).detach()
    losses = train(janus, role, iter(lambda: examples, None), TrainConfig(steps=1, lr=1e-2, warmup_steps=0, seed=0))
    assert len(losses) == 1 and np.isfinite(losses[0])
    changed = {n for n, p in janus.network.named_parameters() if not torch.equal(p, before[n])}
    allowed = {id(p) for p in janus.trainable_parameters(role)}
    names = {n for n, p in janus.network.named_parameters() if id(p) in allowed}
    assert changed and changed <= names, sorted(changed - names)[:5]
    assert all(f".{role}." in n or n.startswith("generator_") for n in changed)
    assert torch.allclose(janus.example_nll(None, examples), reference)  # the reference is untouched


def test_save_and_load_round_trip(janus, tmp_path):
    janus.save(tmp_path / "ckpt")
    loaded = load_backbone(tmp_path / "ckpt")
    request = [SolveRequest(_images(1)[0], "what shape is the red object ?", temperature=0.0)]
    assert loaded.solve(request, seed=0) == janus.solve(request, seed=0)
    a = janus.generate_images(["a blue square"], 1, 1.0, seed=3)[0][0]
    b = loaded.generate_images(["a blue square"], 1, 1.0, seed=3)[0][0]
    assert np.array_equal(a, b)
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} >= {"base.safetensors", "config.json",
                                                               "adapter_solver.safetensors"}


@pytest.mark.usefixtures("prefect_server")
def test_a_tiny_round_runs_on_janus_through_the_same_flow(janus, asg_home, tmp_path):
    from flows.round import round_flow
    from storage.settings import Settings
    from storage.tables import connect, read
    from tests.test_round_flow import _config

    janus.save(tmp_path / "adapter-ckpt")
    result = round_flow(0, str(tmp_path / "adapter-ckpt"), _config().model_copy(update={"evaluation": "none"}))
    db = connect(Settings.from_env())
    assert len(read(db, "images")) == 12 and len(read(db, "questions")) == 24
    assert len(read(db, "specs")) == 12
    assert "finetune.solver_examples" in result and (asg_home / "objects" / "checkpoints" / "round-0").is_dir()
    assert load_backbone(asg_home / "objects" / "checkpoints" / "round-0").name == janus.name


def test_checkpoints_of_pretrained_models_store_adapters_and_the_source_path(janus, tmp_path):
    """A model loaded with from_pretrained(local path) saves its adapters and the path, not another copy."""
    janus.save(tmp_path / "pretrained")  # stands in for a downloaded model folder
    source = {"janus": {"path": str(tmp_path / "pretrained")},
              "composite": {"vlm_path": str(tmp_path / "pretrained"), "pipeline_path": str(tmp_path / "pretrained")}}
    janus.source = source[janus.name]
    try:
        janus.save(tmp_path / "round-ckpt")
    finally:
        janus.source = None
    saved = {p.name for p in (tmp_path / "round-ckpt").iterdir()}
    assert "base.safetensors" not in saved and "adapter_generator.safetensors" in saved
    assert json.loads((tmp_path / "round-ckpt" / "config.json").read_text())["source"] == source[janus.name]


@pytest.mark.usefixtures("prefect_server")
def test_the_gpu_script_runs_a_round_from_local_model_folders(janus, asg_home, tmp_path):
    """infra/real_model_round.py on folders laid out like downloaded models (tiny weights saved here)."""
    import importlib.util
    from pathlib import Path

    from PIL import Image

    images = tmp_path / "unlabeled"
    images.mkdir()
    for i, image in enumerate(_images(6)):
        Image.fromarray(image).save(images / f"{i}.png")
    if janus.name == "janus":
        fresh = create_backbone("janus", seed=1, size="tiny")
        fresh.network.save_pretrained(tmp_path / "model")
        fresh.tokenizer.save_pretrained(tmp_path / "model")
        argv = ["janus", "--model", str(tmp_path / "model")]
    else:
        fresh = create_backbone("composite", seed=1, size="tiny")
        fresh.network.vlm.save_pretrained(tmp_path / "vlm")
        fresh.processor.save_pretrained(tmp_path / "vlm")
        fresh.network.transformer.save_pretrained(tmp_path / "pipe" / "transformer")
        fresh.network.vae.save_pretrained(tmp_path / "pipe" / "vae")
        fresh.scheduler.save_pretrained(tmp_path / "pipe" / "scheduler")
        argv = ["composite", "--vlm", str(tmp_path / "vlm"), "--pipeline", str(tmp_path / "pipe")]
    spec = importlib.util.spec_from_file_location(
        "real_model_round", Path(__file__).resolve().parent.parent / "infra" / "real_model_round.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    result = script.main([*argv, "--images", str(images), "--n-images", "4", "--image-size", "32", "--steps", "2",
                          "--batch-size", "2"])
    from storage.settings import Settings
    from storage.tables import connect, read

    assert len(read(connect(Settings.from_env()), "images")) == 6
    assert result["finetune.solver_examples"] >= 0
    round_ckpt = asg_home / "objects" / "checkpoints" / "round-0"
    meta = json.loads((round_ckpt / "config.json").read_text())
    assert meta["source"] and not (round_ckpt / "base.safetensors").exists()
    assert load_backbone(round_ckpt).name == janus.name


def test_the_composite_conditions_a_prompt_alike_alone_and_beside_a_longer_one():
    # The DiT attends to the prompt's padding: padded to its batch's longest prompt, a prompt's image depended
    # on its batch-mates (measured on the embedded flow base); fixed-width padding, as diffusers' pipelines do.
    b = create_backbone("composite", seed=0, size="tiny")
    with torch.no_grad():
        alone, pooled_alone = b._condition(["three circles"])
        mixed, pooled_mixed = b._condition(["a red circle left of a blue square and a green triangle", "three circles"])
    assert alone.shape[1] == mixed.shape[1] == b.config.prompt_tokens
    assert torch.allclose(alone[0], mixed[1], atol=1e-5) and torch.allclose(pooled_alone[0], pooled_mixed[1], atol=1e-5)
