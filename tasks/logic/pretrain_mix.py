"""The pretraining mixture: which share of each batch draws from each group of seed-set examples.

`asg pretrain --mix vqa=0.37,relate=0.18,caption=0.08,ask=0.07,spec=0.10,t2i=0.20` overrides the default mix;
shares are normalised to sum to 1, and a group the backbone has no examples for is an error naming it.

    >>> parse_mix("vqa=3,t2i=1", {"vqa", "t2i", "caption"})
    {'vqa': 0.75, 't2i': 0.25}
"""

from __future__ import annotations

PRETRAIN_MIX = {"vqa": 0.45, "caption": 0.10, "ask": 0.10, "spec": 0.15, "t2i": 0.20}
# A base that reads relations also trains on its seed scenes' locate items and every relation question between
# their objects ("relate", world.seed_set.relation_reading_examples): the seed questions alone hold ~400 relation
# questions, too few to learn reading cells and comparing them (a first base on them: relation VQA 0.42).
RELATION_READING_MIX = {"vqa": 0.40, "relate": 0.20, "caption": 0.08, "ask": 0.08, "spec": 0.09, "t2i": 0.15}
SEED_SET_GROUPS = frozenset(PRETRAIN_MIX)
RELATION_READING_GROUPS = frozenset(RELATION_READING_MIX)


def parse_mix(text: str, groups: set[str] | frozenset[str]) -> dict[str, float]:
    """`name=share,...` as a normalised mix over `groups`; one-line ValueError naming the bad part."""
    mix: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        name, sep, share = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--mix part {part!r} is not name=share (e.g. vqa=0.4)")
        if name not in groups:
            raise ValueError(f"--mix group {name!r} is not one of {sorted(groups)}")
        if name in mix:
            raise ValueError(f"--mix names {name!r} twice")
        try:
            value = float(share)
        except ValueError:
            raise ValueError(f"--mix share {share.strip()!r} of {name!r} is not a number") from None
        if not value > 0 or value == float("inf"):
            raise ValueError(f"--mix share of {name!r} must be a positive number, got {share.strip()!r}")
        mix[name] = value
    total = sum(mix.values())
    return {name: round(value / total, 6) for name, value in mix.items()}


def format_mix(mix: dict[str, float]) -> str:
    """The `--mix` text that reproduces `mix`.

    >>> format_mix({"vqa": 0.75, "t2i": 0.25})
    'vqa=0.75,t2i=0.25'
    """
    return ",".join(f"{name}={value:g}" for name, value in mix.items())
