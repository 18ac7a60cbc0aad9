"""Load-time checks of weights: safetensors only (no pickle), and shapes that fit the network config.json builds."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

# Weight files in Python's pickle format: loading one can run arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def refuse_pickle_weights(folder: str | Path) -> None:
    """Raise ValueError when a folder (or a subfolder of it) holds pickle weights and no safetensors beside them,
    so nothing falls back to unpickling; folders with both load the safetensors."""
    root = Path(folder)
    for directory in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        files = [p for p in directory.iterdir() if p.is_file()]
        pickles = sorted(p.name for p in files if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles and not any(p.suffix == ".safetensors" for p in files):
            raise ValueError(f"{directory} holds pickle weights ({', '.join(pickles[:3])}) and no safetensors: asg "
                             "loads safetensors only, since unpickling can run code; convert them (e.g. "
                             "transformers' save_pretrained(..., safe_serialization=True)) or remove them")


def check_shapes(state: Mapping, expected: Mapping, source: object,
                 hint: Callable[[str, tuple, tuple], str] = lambda *_: "") -> None:
    """Raise ValueError naming every tensor of `state` whose shape differs from `expected`."""
    bad = [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in state.items()
           if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if bad:
        raise ValueError(f"{source} does not match its config.json: " + "; ".join(
            f"{k}: weights {got} vs config {want}{hint(k, got, want)}" for k, got, want in bad))
