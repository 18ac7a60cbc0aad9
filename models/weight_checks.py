"""Load-time check that saved weights fit the network their config.json builds (both shapes named)."""

from __future__ import annotations

from typing import Callable, Mapping


def check_shapes(state: Mapping, expected: Mapping, source: object,
                 hint: Callable[[str, tuple, tuple], str] = lambda *_: "") -> None:
    """Raise ValueError naming every tensor of `state` whose shape differs from `expected`."""
    bad = [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in state.items()
           if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if bad:
        raise ValueError(f"{source} does not match its config.json: " + "; ".join(
            f"{k}: weights {got} vs config {want}{hint(k, got, want)}" for k, got, want in bad))
