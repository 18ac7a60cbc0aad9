"""The embedded model's diffusion and rectified-flow generators (tiny configs built here)."""

from __future__ import annotations

import copy
import dataclasses
import itertools

import numpy as np
import pytest
import torch

from models.protocol import SolveRequest, TrainingExample
from models.registry import create_backbone, load_backbone
from models.shapes_latent_backbone import code_latents
from models.training import TrainConfig, train
from tests.conftest import SHIPPED_BASE
from world import codebook, splits
from world.render import render


def _images(n):
    return [render(splits.scene_at("seed", i, 0)) for i in range(n)]


def test_cell_latents_decode_exactly_through_the_codebook():
    latents = code_latents()
    assert latents.shape == (codebook.N_CODES, 16)
    empty = codebook.encode(np.zeros((32, 32, 3), np.uint8))[0]
    assert latents[empty, 0] == -1 and (np.delete(latents[:, 0], empty) == 1).all()  # objectness
    assert np.allclose(latents[empty, 1:4], 0)  # an empty patch has no colour
    red = [i for i, p in enumerate(codebook.codebook()) if tuple(p.max((0, 1))) == (230, 30, 30)]
    assert len(red) > 1 and np.ptp(latents[red, 1:4], axis=0).max() < 1e-5  # one colour, one colour latent
    distances = np.linalg.norm(latents[:, None] - latents[None], axis=-1) + np.eye(len(latents)) * 1e9
    assert distances.min() > 1.0  # every code keeps its own latent
    b = create_backbone("shapes-flow", seed=0, size="tiny")
    images = _images(5)
    assert b._to_codes(b._from_codes(images)) == [codebook.encode(im) for im in images]
    noisy = b._from_codes(images) + 0.05 * torch.randn(5, 16, 4, 4, generator=torch.Generator().manual_seed(0))
    assert b._to_codes(noisy) == [codebook.encode(im) for im in images]  # small errors still decode exactly


@pytest.mark.parametrize("name", ["shapes-diffusion", "shapes-flow"])
def test_generator_role_trains_only_the_denoiser_adapter_and_round_trips(name, tmp_path):
    b = create_backbone(name, seed=0, size="tiny")
    b.attach_roles()
    images = _images(2)
    t2i = [TrainingExample("t2i", prompt="a red circle", target_image=images[0])]
    mixed = t2i + [TrainingExample("vqa", image=images[1], prompt="how many objects are there ?", target="two")]
    nll = b.example_nll("generator", mixed)
    assert nll.shape == (2,) and torch.isfinite(nll).all()
    reference = b.example_nll(None, t2i).detach()
    before = {n: p.detach().clone() for n, p in b.network.named_parameters()}
    train(b, "generator", iter(lambda: t2i, None), TrainConfig(steps=2, lr=1e-2, warmup_steps=0, seed=0))
    changed = {n for n, p in b.network.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("denoiser.") and ".generator." in n for n in changed)
    assert torch.allclose(b.example_nll(None, t2i), reference)  # the reference (adapters off) is untouched
    assert not torch.allclose(b.example_nll("generator", t2i), reference)
    generated = b.generate_images(["a red circle", "two squares"], 2, 1.0, seed=4)
    assert [len(g) for g in generated] == [2, 2] and generated[0][0].shape == (32, 32, 3)
    b.save(tmp_path / "ckpt")
    loaded = load_backbone(tmp_path / "ckpt")
    assert np.array_equal(loaded.generate_images(["a red circle"], 1, 1.0, seed=4)[0][0], generated[0][0])
    assert torch.allclose(loaded.example_nll("generator", t2i), b.example_nll("generator", t2i))


def test_pretraining_draws_fresh_noise_each_step_and_a_role_update_keeps_its_draws():
    b = create_backbone("shapes-flow", seed=0, size="tiny", cfg_drop=0.0)
    t2i = [TrainingExample("t2i", prompt="a red circle", target_image=_images(1)[0])]
    b.network.train()
    first, second = b.example_nll(None, t2i), b.example_nll(None, t2i)
    assert not torch.allclose(first, second)  # a memorisable fixed draw per prompt would let it ignore the prompt
    b.network.eval()
    b.attach_roles()
    b.network.train()
    assert torch.equal(b.example_nll("generator", t2i), b.example_nll("generator", t2i))
    # imitation numbers its visits: another draw scores the same example on other noise, reproducibly
    revisit = [dataclasses.replace(t2i[0], draw=7)]
    assert not torch.allclose(b.example_nll("generator", revisit), b.example_nll("generator", t2i))
    assert torch.equal(b.example_nll("generator", revisit), b.example_nll("generator", revisit))


LONG = "a red circle left of a blue square and a green triangle"  # wider than condition_tokens (9)


@pytest.mark.parametrize("name", ["shapes-flow", "shapes-diffusion"])
def test_a_prompts_image_and_loss_do_not_depend_on_its_batch_mates(name):
    # The denoiser attends to the condition's padding: batched alone, a short prompt once drew another image
    # than beside a long one ("three circles" on the flow base: 11 of 52 right alone, 42 in a mixed batch).
    b = create_backbone(name, seed=0, size="tiny")
    assert b._condition_width("three circles") == 9 and b._condition_width(LONG) > 9
    alone = b.generate_images(["three circles"], 2, 1.0, seed=[11])[0]
    mixed = b.generate_images([LONG, "a red circle", "three circles"], 2, 1.0, seed=[5, 6, 11])
    assert all(np.array_equal(x, y) for x, y in zip(alone, mixed[2]))
    b.attach_roles()
    image = _images(1)[0]
    short = TrainingExample("t2i", prompt="three circles", target_image=image, draw=3)
    long = TrainingExample("t2i", prompt=LONG, target_image=image, draw=4)
    with torch.no_grad():
        together = b.example_nll("generator", [long, short])
        assert torch.allclose(together[1], b.example_nll("generator", [short])[0])
        assert torch.allclose(together[0], b.example_nll("generator", [long])[0])


def test_imitation_visits_drop_some_prompts_and_policy_draws_keep_every_prompt():
    # Guidance amplifies an update the unconditional branch does not follow: imitation drops prompts as often
    # as pretraining (cfg_drop) so that it does; a policy update (draw 0) must score policy and reference alike.
    dropping = create_backbone("shapes-flow", seed=0, size="tiny", cfg_drop=0.3)
    keeping = create_backbone("shapes-flow", seed=0, size="tiny", cfg_drop=0.3, update_cfg_drop=False)
    image = _images(1)[0]
    visits = [TrainingExample("t2i", prompt="a red circle", target_image=image, draw=d) for d in range(40)]
    for b in (dropping, keeping):
        b.attach_roles()
    with torch.no_grad():
        dropped = dropping.example_nll("generator", visits)
        kept = keeping.example_nll("generator", visits)
    same = torch.isclose(dropped, kept)
    assert same[0]  # the policy's draw
    assert 4 <= int((~same[1:]).sum()) <= 22  # about 30% of the 39 visits dropped their prompt
    assert torch.equal(dropped, dropping.example_nll("generator", visits).detach())  # reproducible


def test_imitation_batches_give_every_visit_its_own_draw_and_the_same_stream_again():
    from tasks.finetune import _mixed

    own = [TrainingExample("t2i", prompt=f"a red circle {i}") for i in range(3)]
    replay = [TrainingExample("t2i", prompt="a blue square")]
    first = list(itertools.islice(_mixed(own, replay, 0.5, 4, seed=3), 5))
    draws = [e.draw for batch in first for e in batch]
    assert draws == list(range(1, 21))  # 5 batches of 4: each visit a new draw, none the policy's fixed 0
    again = list(itertools.islice(_mixed(own, replay, 0.5, 4, seed=3), 5))
    assert [[(e.prompt, e.draw) for e in b] for b in again] == [[(e.prompt, e.draw) for e in b] for b in first]


def test_init_from_takes_the_shipped_trunk_and_pretraining_moves_only_the_denoiser():
    b = create_backbone("shapes-flow", seed=0, freeze_understanding=True, denoiser_layers=1)
    b.init_understanding_from(SHIPPED_BASE)
    base = load_backbone(SHIPPED_BASE)
    request = [SolveRequest(_images(1)[0], "how many objects are there ?", temperature=0.0)]
    assert b.solve(request, seed=0) == base.solve(request, seed=0)  # same understanding
    params = b.trainable_parameters(None)
    denoiser = {id(p) for p in b.network.denoiser.parameters()}
    assert params and all(id(p) in denoiser for p in params)
    b.network.train()
    t2i = [TrainingExample("t2i", prompt="a red circle", target_image=_images(1)[0])]
    b.example_nll(None, t2i).sum().backward()
    assert all(p.grad is None for n, p in b.network.named_parameters() if not n.startswith("denoiser."))
    assert any(p.grad is not None for p in b.network.denoiser.parameters())
    with pytest.raises(ValueError, match="does not fit this model's trunk"):
        create_backbone("shapes-flow", seed=0, size="tiny").init_understanding_from(SHIPPED_BASE)


class _OracleDenoiser(torch.nn.Module):
    """Predicts the exact v (diffusion) or velocity (flow) that leads to a known latent x0."""

    def __init__(self, x0: torch.Tensor, paradigm: str, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.x0, self.paradigm, self.alphas_cumprod = x0, paradigm, alphas_cumprod

    def forward(self, hidden_states, timestep, **_):
        from types import SimpleNamespace

        x0 = self.x0.expand(len(hidden_states), -1, -1, -1)
        t = timestep.view(-1, 1, 1, 1)
        if self.paradigm == "flow":
            out = (hidden_states - x0) / (t / 1000).clamp(min=1e-6)
        else:
            ab = self.alphas_cumprod[timestep.long()].view(-1, 1, 1, 1)
            noise = (hidden_states - ab.sqrt() * x0) / (1 - ab).sqrt()
            out = ab.sqrt() * noise - (1 - ab).sqrt() * x0  # v-prediction
        return SimpleNamespace(sample=out)


@pytest.mark.parametrize("name", ["shapes-diffusion", "shapes-flow"])
def test_sampler_with_an_oracle_denoiser_reproduces_the_target_scene_exactly(name):
    """The samplers keep the latents' scale: with a perfect denoiser every generated image is the target
    (diffusers' DDIM clips x0 to [-1, 1] by default, which would turn it into the wrong objects)."""
    b = create_backbone(name, seed=0, size="tiny")
    target = _images(1)[0]
    x0 = b._from_codes([target])
    assert x0.abs().max() > 1.5  # the latents do leave [-1, 1]
    b.network.denoiser = _OracleDenoiser(x0, b.paradigm, getattr(b._train_scheduler(), "alphas_cumprod", None))
    generated = b.generate_images(["a red circle"], 3, 1.0, seed=0)[0]
    assert all(np.array_equal(im, target) for im in generated)


@pytest.mark.parametrize("name", ["shapes-flow-base", "shapes-diffusion-base"])
def test_shipped_latent_bases_draw_the_prompted_objects(name):
    """The shipped diffusion and rectified-flow bases follow their prompts (a denoiser that ignored the
    prompt would match colour and shape of a single object about once in 12 draws)."""
    from world import parser

    backbone = load_backbone(SHIPPED_BASE.parent / name)
    prompts = ["a red circle", "a green square", "a blue triangle", "a yellow circle", "a purple square",
               "a cyan triangle"]
    images = backbone.generate_images(prompts, 2, 1.0, seed=0)
    correct = sum(parser.check_prompt(image, p) for p, drawn in zip(prompts, images) for image in drawn)
    assert correct >= 9, f"{name}: {correct} of 12 images match their prompt"


def test_preference_update_ranks_the_chosen_sample_above_the_rejected_one_and_moves_only_the_denoiser():
    """Diffusion-DPO on one pair: the margin starts at 0 (policy = reference) and grows; only the Generator's
    denoiser adapter moves; the reference (adapters off) keeps both samples' denoising errors."""
    from models.preference_training import PreferenceConfig, preference_update

    b = create_backbone("shapes-flow", seed=0, size="tiny")
    b.attach_roles()
    chosen_image, rejected_image = _images(2)
    pair = (TrainingExample("t2i", prompt="a red circle", target_image=chosen_image),
            TrainingExample("t2i", prompt="a red circle", target_image=rejected_image))
    reference = b.example_nll(None, list(pair)).detach()
    before = {n: p.detach().clone() for n, p in b.network.named_parameters()}
    stats = preference_update(b, "generator", [pair], 1, PreferenceConfig(steps=12, lr=3e-2, beta=50.0,
                                                                          warmup_steps=0))
    assert len(stats) == 12 and not any(s.skipped for s in stats)
    assert stats[0].margin == pytest.approx(0.0, abs=1e-6) and stats[0].loss == pytest.approx(np.log(2), abs=1e-4)
    assert np.mean([s.margin for s in stats[-4:]]) > 0 and stats[-1].loss < stats[0].loss
    changed = {n for n, p in b.network.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("denoiser.") and ".generator." in n for n in changed)
    assert torch.allclose(b.example_nll(None, list(pair)), reference)


def test_preference_update_from_the_start_reference_begins_at_zero_margin_where_the_base_reference_does_not():
    """A second update on the same pair: against the base (adapters off) the first update's ranking is already
    there (margin > 0 at its first step); against the adapter as the update found it (`reference="start"`) the
    margin starts at about 0 (dropout aside) and the update moves on from there; only the denoiser's Generator
    adapter moves."""
    from models.preference_training import PreferenceConfig, preference_update

    b = create_backbone("shapes-flow", seed=0, size="tiny")
    b.attach_roles()
    chosen_image, rejected_image = _images(2)
    pair = (TrainingExample("t2i", prompt="a red circle", target_image=chosen_image),
            TrainingExample("t2i", prompt="a red circle", target_image=rejected_image))
    config = PreferenceConfig(steps=12, lr=3e-2, beta=50.0, warmup_steps=0)
    preference_update(b, "generator", [pair], 1, config)
    found = {n: p.detach().clone() for n, p in b.network.named_parameters()}
    again_base = preference_update(copy.deepcopy(b), "generator", [pair], 1, dataclasses.replace(config, steps=1))
    again_start = preference_update(b, "generator", [pair], 1, dataclasses.replace(config, reference="start"))
    assert again_base[0].margin > 0.01
    assert abs(again_start[0].margin) < 0.2 * again_base[0].margin
    assert np.mean([s.margin for s in again_start[-4:]]) > 0.01
    changed = {n for n, p in b.network.named_parameters() if not torch.equal(p, found[n])}
    assert changed and all(n.startswith("denoiser.") and ".generator." in n for n in changed)
    with pytest.raises(ValueError, match="unknown preference reference 'round'"):
        PreferenceConfig(reference="round")
