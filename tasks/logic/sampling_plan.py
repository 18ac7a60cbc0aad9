"""The Solver's N prompt framings and temperature/top-p ladder (METHOD.md, Solve step 4).

Sample i uses framing i and the ladder quantile q_i in (0, 1, .2, .8, .4, .6, .1):
T = 0.5 + 2.0 q, top-p = 0.3 + 0.7 q.

    >>> sampler_ladder(3)
    [(0.5, 0.3), (2.5, 1.0), (0.9, 0.44)]
"""

from __future__ import annotations

FRAMINGS = ("canonical", "observational", "analyst", "direct", "examiner", "concise", "evidence")
LADDER_QUANTILES = (0.0, 1.0, 0.2, 0.8, 0.4, 0.6, 0.1)
T_RANGE = (0.5, 2.5)
TOP_P_RANGE = (0.3, 1.0)


def sampler_ladder(n: int) -> list[tuple[float, float]]:
    """(temperature, top_p) for each of n samples, cycling the quantiles past 7."""
    out = []
    for i in range(n):
        q = LADDER_QUANTILES[i % len(LADDER_QUANTILES)]
        t = T_RANGE[0] + (T_RANGE[1] - T_RANGE[0]) * q
        p = TOP_P_RANGE[0] + (TOP_P_RANGE[1] - TOP_P_RANGE[0]) * q
        out.append((round(t, 4), round(p, 4)))
    return out


def framing_for(i: int) -> str:
    return FRAMINGS[i % len(FRAMINGS)]
