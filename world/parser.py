"""Pixel scene parser (evaluation only): palette labelling, connected components, shape classification."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from world.captions import caption_of
from world.prompts import matches, parse_prompt
from world.scenes import COLORS, GRID, SIZES, Scene, SceneObject

_NAMES = tuple(COLORS)
# Row 0 is the background; a pixel takes the nearest of background and palette colours.
_PALETTE = np.array([(0, 0, 0)] + [COLORS[c] for c in _NAMES], dtype=np.int32)
_MAX_COLOR_DIST2 = 40**2
_MIN_SIDE, _MAX_SIDE = min(SIZES) - 1, max(SIZES) + 1
_EIGHT = np.ones((3, 3), dtype=bool)
# Centroids of objects in one grid column/row differ by at most ~2.6 px and across cells by >= 5.4 px,
# so a 3 px margin makes centroid relations agree with the cell relations of the oracle.
_RELATION_MARGIN = 3.0


@dataclass(frozen=True)
class ParsedObject:
    shape: str | None  # None = malformed
    color: str
    cx: float
    cy: float


@dataclass(frozen=True)
class ParsedScene:
    """All components found; malformed ones have shape None and are also counted in n_malformed."""
    objects: tuple[ParsedObject, ...]
    n_malformed: int

    @property
    def wellformed(self) -> tuple[ParsedObject, ...]:
        return tuple(o for o in self.objects if o.shape is not None)


def label_pixels(image: np.ndarray) -> np.ndarray:
    """(32, 32) int labels: 0 background or ignored, k >= 1 palette colour _NAMES[k - 1]."""
    pixels = np.asarray(image, dtype=np.int32)[..., :3]
    dist2 = ((pixels[..., None, :] - _PALETTE) ** 2).sum(-1)
    nearest = dist2.argmin(-1)
    close = np.take_along_axis(dist2, nearest[..., None], -1)[..., 0] <= _MAX_COLOR_DIST2
    return np.where(close, nearest, 0)


def _rows_solid_and_centred(mask: np.ndarray) -> bool:
    w = mask.shape[1]
    for row in mask:
        cols = np.flatnonzero(row)
        if len(cols) == 0 or cols[-1] - cols[0] + 1 != len(cols) or abs(cols[0] + cols[-1] - (w - 1)) > 1:
            return False
    return True


def _unimodal(profile: np.ndarray) -> bool:
    peak = int(profile.argmax())
    return bool(np.all(np.diff(profile[:peak + 1]) >= 0) and np.all(np.diff(profile[peak:]) <= 0))


def classify(mask: np.ndarray) -> str | None:
    """Shape of a component's bounding-box mask, or None when it is no well-formed shape."""
    h, w = mask.shape
    if not (_MIN_SIDE <= h <= _MAX_SIDE and _MIN_SIDE <= w <= _MAX_SIDE and abs(h - w) <= 1):
        return None
    profile = mask.sum(axis=1)
    if np.all(profile == w) and h == w:
        return "square"
    if not _rows_solid_and_centred(mask):
        return None
    if profile[0] <= 2 and profile[-1] == w and np.all(np.diff(profile) >= 0):
        return "triangle"
    if profile.max() == w and profile[0] < w and profile[-1] < w and abs(int(profile[0]) - int(profile[-1])) <= 1 \
            and _unimodal(profile):
        return "circle"
    return None


def _components(labels: np.ndarray, k: int) -> list[ParsedObject]:
    components, _ = ndimage.label(labels == k, structure=_EIGHT)
    found = []
    for i, box in enumerate(ndimage.find_objects(components), start=1):
        mask = components[box] == i
        ys, xs = np.nonzero(mask)
        found.append(ParsedObject(classify(mask), _NAMES[k - 1],
                                  float(xs.mean() + box[1].start + 0.5), float(ys.mean() + box[0].start + 0.5)))
    return found


def parse(image: np.ndarray) -> ParsedScene:
    labels = label_pixels(image)
    objects = [o for k in range(1, len(_PALETTE)) for o in _components(labels, k)]
    objects.sort(key=lambda o: (o.cy, o.cx))
    return ParsedScene(tuple(objects), sum(1 for o in objects if o.shape is None))


def centroid_relation(a: ParsedObject, b: ParsedObject, relation: str) -> bool:
    if relation == "left of":
        return a.cx < b.cx - _RELATION_MARGIN
    if relation == "right of":
        return a.cx > b.cx + _RELATION_MARGIN
    if relation == "above":
        return a.cy < b.cy - _RELATION_MARGIN
    if relation == "below":
        return a.cy > b.cy + _RELATION_MARGIN
    raise ValueError(f"unknown relation {relation!r}")


def check_prompt(image: np.ndarray, text: str) -> bool:
    parsed = parse(image)
    return parsed.n_malformed == 0 and matches(parse_prompt(text), parsed.objects, centroid_relation)


def parsed_caption(image: np.ndarray) -> str:
    parsed = parse(image)
    return caption_of(((o.color, o.shape) for o in parsed.wellformed), parsed.n_malformed)


def parsed_scene(image: np.ndarray) -> Scene | None:
    """The scene a (generated) image shows, with each object in the grid cell of its centroid; None when any
    object is malformed. Lets the oracle judge questions about images that have no hidden scene."""
    parsed = parse(image)
    if parsed.n_malformed:
        return None
    side = image.shape[0] // GRID
    return Scene(tuple(SceneObject(o.shape, o.color, SIZES[0], int(o.cy) // side * GRID + int(o.cx) // side, 0, 0)
                       for o in parsed.objects))
