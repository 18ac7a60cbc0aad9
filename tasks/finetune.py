"""Fine-tune stage: update each role's adapter on its stored examples.

Starts from the round's input checkpoint (base + the previous round's adapters) and writes a new
checkpoint folder. Preset "paper": policy-gradient updates (METHOD.md) with the KL/ratio reference
being the base with adapters disabled — Solver KL-regularised REINFORCE with adaptive beta, Proposer
ratio clipped against the base plus beta * max(0, logp_pi - logp_ref), Generator GRPO clipped
against the rollout policy with a KL to the base. Preset "verified": weighted imitation mixed with
replay of the labeled seed set (`replay_fraction`). Betas carry over between rounds in `role_states`.
The default step counts keep the paper's 3 understanding : 2 generation update steps.

An imitation update saves its progress every 5% of its steps (storage/train_progress.py, keyed by everything that
decides it): a re-run after a crash continues each role from its last saved step, bit for bit, and skips the
roles that had finished. The policy updates of the paper preset start over.

An imitation update reads only the examples its steps visit, a window of batches at a time
(tasks/logic/visit_plan.py draws the visits; `StoredExamples.window` reads those rows and images), so the stage
holds a few thousand examples whatever the pool or the step count; the paper preset's policy updates score every
example and load them all.
"""

from __future__ import annotations

import gc
import itertools
import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from tqdm.auto import tqdm

from models.policy_training import PolicyConfig, policy_update
from models.preference_training import PreferenceConfig, preference_update
from models.protocol import TrainingExample
from models.training import TrainConfig, TrainProgress, train
from models.vocabulary import FRAMINGS
from storage.checkpoints import save_checkpoint
from storage.settings import Settings
from storage.tables import connect, read, sql_quote, upsert
from storage.train_progress import load_progress, remove_progress, save_progress
from tasks.filter import previous_states
from tasks.logic.advantages import BETA_INIT, adaptive_beta
from tasks.logic.preference_pairs import preference_pairs
from tasks.logic.presets import generator_update, recipe_of, role_steps
from tasks.logic.stage_configs import FinetuneConfig
from tasks.round_inputs import images_by_id, private_backbone
from tasks.stage import stage_task
from tasks.stage_cache import inputs_key
from tasks.stage_result import StageResult
from tasks.logic.stage_seeds import stage_seed
from tasks.logic.visit_plan import iter_visit_batches, own_indices, visit_batches
from world.seed_set import seed_examples

ROLE_KINDS = {"solver": ("vqa", "caption"), "proposer": ("ask", "spec"), "generator": ("t2i",)}
PAPER_OBJECTIVES = {
    "solver": dict(objective="reinforce", kl_term="k3"),
    "proposer": dict(objective="clipped", ratio_to="base", kl_term="positive_gap"),
    "generator": dict(objective="clipped", ratio_to="rollout", kl_term="k3"),
}


IMAGE_TABLES = (("images", "image_id"), ("generations", "generation_id"), ("compositions", "composition_id"),
                ("tile_corrections", "correction_id"))
EXAMPLE_COLUMNS = ["example_id", "kind", "image_table", "image_key", "prompt", "target", "framing", "weight"]


def stored_example_ids(db, round_idx: int, role: str, version: int | str | None = None) -> list[str]:
    """The role's example ids of the round in training order (by image table, then id), read as one column."""
    frame = read(db, "training_examples", where=f"round_idx = {round_idx} AND role = '{role}'",
                 columns=["example_id", "image_table"], version=version).sort_values("example_id")
    return [i for table, _ in IMAGE_TABLES for i in frame.loc[frame["image_table"] == table, "example_id"]]


def examples_by_id(db, ids: list[str], version: int | str | None = None, chunk: int = 2000) -> list[TrainingExample]:
    """Those examples (in the order of `ids`) with their images decoded, read `chunk` rows at a time."""
    rows: dict[str, dict] = {}
    for start in range(0, len(ids), chunk):
        where = f"example_id IN ({', '.join(sql_quote(i) for i in ids[start:start + chunk])})"
        rows.update((r["example_id"], r) for r in read(db, "training_examples", where=where, columns=EXAMPLE_COLUMNS,
                                                         version=version).to_dict("records"))
    images: dict[str, np.ndarray] = {}
    for table, key in IMAGE_TABLES:
        keys = sorted({rows[i]["image_key"] for i in ids if rows[i]["image_table"] == table})
        images.update(zip(((table, k) for k in keys), images_by_id(db, table, key, keys, version=version)))
    out = []
    for i in ids:
        row = rows[i]
        image = images[(row["image_table"], row["image_key"])]
        if row["kind"] == "t2i":
            out.append(TrainingExample("t2i", prompt=row["prompt"], target_image=image, weight=row["weight"]))
        else:
            out.append(TrainingExample(row["kind"], image=image, prompt=row["prompt"], target=row["target"],
                                       framing=row["framing"], weight=row["weight"]))
    return out


def stored_examples(db, round_idx: int, role: str, version: int | str | None = None) -> list[TrainingExample]:
    """The role's examples of the round; `version` (a table tag such as "round-3") reads them as the tables were
    then (flows/lineage.py)."""
    return examples_by_id(db, stored_example_ids(db, round_idx, role, version), version)


class StoredExamples(Sequence):
    """A role's stored examples as an update sees them: `len` is all of them, but `window(indices)` reads only
    those (rows and images), so `_mixed` holds the examples of `WINDOW_BATCHES` batches at a time."""

    def __init__(self, db, ids: list[str]):
        self.db, self.ids = db, ids
        self.read_seconds = 0.0  # spent reading windows from the store

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> TrainingExample:
        return examples_by_id(self.db, [self.ids[index]])[0]

    def window(self, indices: set[int]) -> dict[int, TrainingExample]:
        wanted = sorted(indices)
        clock = time.perf_counter()
        found = dict(zip(wanted, examples_by_id(self.db, [self.ids[i] for i in wanted])))
        self.read_seconds += time.perf_counter() - clock
        return found


WINDOW_BATCHES = 24  # batches whose own examples `_mixed` reads from the store at once


def stored_pair_ids(db, round_idx: int, seed: int) -> list[tuple[str, str]]:
    """The round's Generator preference pairs (chosen, rejected generation ids) from its tile verdicts."""
    verdicts = read(db, "tile_verdicts", where=f"round_idx = {round_idx}",
                    columns=["generation_id", "spec_id", "verdict"])
    return preference_pairs(list(verdicts.itertuples(index=False, name=None)), seed)


class StoredPairs(Sequence):
    """Preference pairs as the update reads them: ids held, each window's images (and prompts) read on demand."""

    def __init__(self, db, ids: list[tuple[str, str]]):
        self.db, self.ids = db, ids
        self.read_seconds = 0.0

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[TrainingExample, TrainingExample]:
        return self.window({index})[index]

    def window(self, indices: set[int]) -> dict[int, tuple[TrainingExample, TrainingExample]]:
        clock = time.perf_counter()
        keys = sorted({g for i in indices for g in self.ids[i]})
        where = f"generation_id IN ({', '.join(sql_quote(k) for k in keys)})"
        prompts = dict(read(self.db, "generations", where=where, columns=["generation_id", "prompt"])
                       .itertuples(index=False, name=None))
        images = dict(zip(keys, images_by_id(self.db, "generations", "generation_id", keys)))
        found = {i: tuple(TrainingExample("t2i", prompt=prompts[g], target_image=images[g]) for g in self.ids[i])
                 for i in indices}
        self.read_seconds += time.perf_counter() - clock
        return found  # type: ignore[return-value]


def _prefer(backbone, pairs: StoredPairs, n_steps, lr, batch_size, beta, seed, reference) -> dict[str, float]:
    """The Generator's preference update: `batch_size // 4` pairs a step (each pair is scored by the policy and the
    reference, so a step costs about what `batch_size` imitation examples do)."""
    bar = tqdm(total=n_steps, desc="prefer generator", unit="step")
    stats = preference_update(backbone, "generator", pairs, max(1, batch_size // 4),
                              PreferenceConfig(steps=n_steps, lr=lr, beta=beta, seed=seed, reference=reference),
                              on_step=lambda *_: bar.update(1))
    bar.close()
    tail = stats[-20:]
    return {"generator_loss_first": stats[0].loss, "generator_loss_last": sum(s.loss for s in tail) / len(tail),
            "generator_pair_accuracy_last": sum(s.accuracy for s in tail) / len(tail),
            "generator_pair_margin_last": sum(s.margin for s in tail) / len(tail),
            "generator_skipped_steps": float(sum(s.skipped for s in stats))}


def replay_examples(seed_scenes: int, seed: int, role: str) -> list[TrainingExample]:
    return [TrainingExample(**e) for e in seed_examples(seed_scenes, seed, FRAMINGS) if e["kind"] in ROLE_KINDS[role]]


def _mixed(own, replay, replay_fraction, batch_size, seed, window: int = WINDOW_BATCHES):
    """Endless batches drawing each example from replay with probability `replay_fraction` (tasks/logic/visit_plan.py);
    every visit has its own `draw`, so a denoiser's loss sees new noise each time (models/protocol.py
    TrainingExample). With `own` a `StoredExamples`, the own examples of `window` batches are read at a time."""
    visits = itertools.count(1)
    plan = iter_visit_batches(len(own), len(replay or ()), replay_fraction, batch_size, seed)
    while batches := list(itertools.islice(plan, window)):
        loaded = own.window(own_indices(batches)) if isinstance(own, StoredExamples) else own
        sources = {"own": loaded, "replay": replay}
        for batch in batches:
            yield [replace(sources[source][index], draw=next(visits)) for source, index in batch]


def imitate_role(backbone, role, own, n_steps, lr, batch_size, replay_fraction, replay, seed,
                 resume: TrainProgress | None = None, on_progress=None) -> dict[str, float]:
    """Weighted imitation of `own` examples mixed with `replay` (shared by the imitation presets and the control);
    with `on_progress`, its state every 5% of the steps, and from `resume`, the continuation of a saved run."""
    bar = tqdm(total=n_steps, initial=resume.step if resume else 0, desc=f"finetune {role}", unit="step")
    losses = train(backbone, role, _mixed(own, replay, replay_fraction, batch_size, seed),
                   TrainConfig(steps=n_steps, lr=lr, warmup_steps=min(20, n_steps // 5), seed=seed),
                   lambda *_: bar.update(1), resume=resume, save_every=max(1, n_steps // 20) if on_progress else 0,
                   on_progress=on_progress)
    bar.close()
    return {f"{role}_loss_first": losses[0], f"{role}_loss_last": sum(losses[-10:]) / len(losses[-10:])}


def _reinforce(backbone, role, own, n_steps, lr, batch_size, beta, seed) -> tuple[dict[str, float], float]:
    bar = tqdm(total=n_steps, desc=f"update {role}", unit="step")
    stats = policy_update(backbone, role, own, batch_size,
                          PolicyConfig(steps=n_steps, lr=lr, beta=beta, seed=seed, **PAPER_OBJECTIVES[role]),
                          update_beta=adaptive_beta, on_step=lambda *_: bar.update(1))
    bar.close()
    done = [s for s in stats if not s.skipped]
    final_beta = adaptive_beta(stats[-1].beta, stats[-1].kl) if done else beta
    metrics = {f"{role}_skipped_steps": float(len(stats) - len(done)), f"{role}_beta_final": final_beta}
    if done:
        n = len(done)
        metrics.update({f"{role}_loss_first": done[0].loss, f"{role}_loss_last": done[-1].loss,
                        f"{role}_policy_loss_mean": sum(s.policy_loss for s in done) / n,
                        f"{role}_kl_mean": sum(s.kl for s in done) / n,
                        f"{role}_kl_last": done[-1].kl,
                        f"{role}_batch_advantage_mean": sum(s.mean_advantage for s in done) / n})
    return metrics, final_beta


def train_roles(round_idx: int, checkpoint_uri: str, output_uri: str, steps: dict[str, int], lr: float,
                batch_size: int, replay_fraction: float, seed_scenes: int, preset: str = "paper", seed: int = 0,
                seed_set_seed: int = 0, namespace: str = "", tables: dict[str, int] | None = None,
                generator_choice: str = "auto", preference_beta: float = 200.0, preference_reference: str = "start"
                ) -> tuple[dict[str, float], dict[str, float]]:
    """Update every role's adapter and save the new checkpoint: (metrics, final betas).

    Runs in the stage's process, or on every rank of a `torchrun` launch (tasks/finetune_ranks.py):
    all ranks read the same examples, train data-parallel, and only rank 0 writes the checkpoint."""
    # Objects alive before training (a flow process holds many) are never garbage: keep the collector from
    # re-scanning them during hundreds of steps.
    clock = time.perf_counter()
    gc.collect()
    gc.freeze()
    try:
        return _train_roles(round_idx, checkpoint_uri, output_uri, steps, lr, batch_size, replay_fraction,
                            seed_scenes, preset, seed, seed_set_seed, namespace, tables, clock, generator_choice,
                            preference_beta, preference_reference)
    finally:
        gc.unfreeze()


def _train_roles(round_idx, checkpoint_uri, output_uri, steps, lr, batch_size, replay_fraction, seed_scenes, preset,
                 seed, seed_set_seed, namespace, tables, started: float, generator_choice: str = "auto",
                 preference_beta: float = 200.0, preference_reference: str = "start"):
    """The work of `train_roles`; its metrics include where the stage's time went (`*_seconds`: setup up to the
    first role, each role's example reads and update, the checkpoint's save)."""
    from models.data_parallel import world

    settings = Settings.from_env().within(namespace)
    db = connect(settings, at=tables)  # the examples the filter stage handed on
    # Saved progress belongs to exactly these inputs (and this code): anything else starts from step 0.
    key = inputs_key({}, dict(round_idx=round_idx, checkpoint_uri=checkpoint_uri, output_uri=output_uri, steps=steps,
                              lr=lr, batch_size=batch_size, replay_fraction=replay_fraction, seed_scenes=seed_scenes,
                              preset=preset, seed=seed, seed_set_seed=seed_set_seed, tables=tables,
                              generator_choice=generator_choice, preference_beta=preference_beta,
                              preference_reference=preference_reference))
    # A private copy, not the per-process cache: the input checkpoint must stay as it was.
    backbone = private_backbone(checkpoint_uri, settings)
    states = previous_states(db, round_idx)
    metrics: dict[str, float] = {}
    betas: dict[str, float] = {}
    metrics["setup_seconds"] = time.perf_counter() - started
    prefers = generator_update(preset, generator_choice, getattr(backbone, "paradigm", "autoregressive"))
    metrics["generator_preference"] = float(prefers == "preference")
    for role, n_steps in steps.items():
        clock = time.perf_counter()
        role_seed = stage_seed("finetune", seed, round_idx, role)
        if role == "generator" and prefers == "preference":
            pairs = StoredPairs(db, stored_pair_ids(db, round_idx, role_seed))
            metrics["generator_pairs"] = len(pairs)  # 0 says so: no update on nothing
            if n_steps > 0 and len(pairs):
                metrics.update(_prefer(backbone, pairs, n_steps, lr, batch_size, preference_beta, role_seed,
                                       preference_reference))
                metrics["generator_read_seconds"] = pairs.read_seconds
                metrics["generator_seconds"] = time.perf_counter() - clock
            continue
        ids = stored_example_ids(db, round_idx, role)
        metrics[f"{role}_examples"] = len(ids)
        if n_steps <= 0 or not ids:
            continue
        if recipe_of(preset).update == "policy":
            # The policy update scores every example under the rollout policy, so it loads them all.
            beta = states.get(f"beta:{role}", BETA_INIT)
            examples = examples_by_id(db, ids)
            metrics[f"{role}_read_seconds"] = time.perf_counter() - clock
            role_metrics, betas[role] = _reinforce(backbone, role, examples, n_steps, lr, batch_size, beta, role_seed)
            del examples
        else:
            replay = replay_examples(seed_scenes, seed_set_seed, role)
            own = StoredExamples(db, ids)
            metrics[f"{role}_examples_visited"] = len(own_indices(visit_batches(len(ids), len(replay), replay_fraction,
                                                                                batch_size, role_seed, n_steps)))
            # Replay is the labeled seed set of pretraining (`seed_set_seed`), never other labeled scenes:
            # an experiment's `seed` varies the rollouts, not the labels.
            resume = _saved_progress(settings, round_idx, key, role)
            if resume is not None:
                print(f"finetune {role}: continuing from step {resume.step} of {n_steps} (saved progress)")

            def save(progress: TrainProgress, role=role) -> None:
                if world()[0] == 0:
                    save_progress(settings, round_idx, key, role, _arrays(progress), step=progress.step,
                                  losses=progress.losses)

            role_metrics = imitate_role(backbone, role, own, n_steps, lr, batch_size, replay_fraction, replay,
                                        role_seed, resume, save)
            metrics[f"{role}_read_seconds"] = own.read_seconds
        metrics.update(role_metrics)
        metrics[f"{role}_seconds"] = time.perf_counter() - clock
    clock = time.perf_counter()
    if world()[0] == 0:
        save_checkpoint(backbone, output_uri, settings)
        remove_progress(settings, round_idx, key)
    metrics["save_seconds"] = time.perf_counter() - clock
    return metrics, betas


def _arrays(progress: TrainProgress) -> dict[str, np.ndarray]:
    """A progress's tensors as numpy arrays (bfloat16 as float32, which holds it exactly)."""
    out = {}
    for name, tensor in progress.tensors.items():
        tensor = tensor.detach().cpu()
        out[name] = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
    return out


def _saved_progress(settings: Settings, round_idx: int, key: str, role: str) -> TrainProgress | None:
    found = load_progress(settings, round_idx, key, role)
    if found is None:
        return None
    step, losses, arrays = found
    return TrainProgress(step, losses, {name: torch.from_numpy(array) for name, array in arrays.items()})


@stage_task("finetune", "finetune-roles")
def finetune_roles(round_idx: int, checkpoint_uri: str, output_uri: str, preset: str = "paper",
                   config: FinetuneConfig = FinetuneConfig(), seed: int = 0, tables: dict[str, int] | None = None,
                   namespace: str = "") -> StageResult:
    """Every role's update for the preset's recipe: the preset's default steps unless `config.steps` names them,
    the policy learning rate for RL updates, the imitation one otherwise. `config.processes` > 1 trains
    data-parallel in that many `torchrun` ranks (gloo on CPU, NCCL on GPUs)."""
    settings = Settings.from_env().within(namespace)
    steps = role_steps(preset, config.steps)
    processes = config.processes
    args = dict(round_idx=round_idx, checkpoint_uri=checkpoint_uri, output_uri=output_uri, steps=steps,
                lr=config.policy_lr if recipe_of(preset).update == "policy" else config.lr,
                batch_size=config.batch_size, replay_fraction=config.replay_fraction, seed_scenes=config.seed_scenes,
                preset=preset, seed=seed, seed_set_seed=config.seed_set_seed, namespace=namespace, tables=tables,
                generator_choice=config.generator_update, preference_beta=config.preference_beta,
                preference_reference=config.preference_reference)
    if processes > 1:
        from tasks.finetune_ranks import launch

        metrics, betas = launch(args, processes, settings)
    else:
        metrics, betas = train_roles(**args)
    db = connect(settings)
    upsert(db, "role_states", [{"state_id": f"r{round_idx}:beta:{r}", "round_idx": round_idx, "name": f"beta:{r}",
                                "value": b} for r, b in sorted(betas.items())],
           replace_where=f"round_idx = {round_idx} AND name LIKE 'beta:%'")
    metrics["processes"] = float(processes)
    trained = sum(int(metrics.get(f"{r}_examples", 0)) for r in steps) + int(metrics.get("generator_pairs", 0))
    return StageResult("finetune", round_idx, {}, trained, metrics)
