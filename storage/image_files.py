"""Read real image files from a folder or any fsspec URL, for ingestion into the self-training pipeline.

Sources can be a local path, a ``file://`` URL or a remote URL such as ``s3://bucket/prefix``; remote
credentials travel in ``storage_options`` exactly as fsspec takes them::

    opts = {"key": "...", "secret": "...", "endpoint_url": "http://127.0.0.1:5055"}
    listing = scan_source("s3://images/raw", opts)   # listing.skipped: [(path, "unsupported-suffix"), ...]
    for uri in listing.images:
        try:
            pixels = read_image(uri, size=256, storage_options=opts)   # uint8 (256, 256, 3) RGB
        except ImageRejected as rejected:
            record_rejection(uri, rejected.reason)                     # "corrupt", "too-large", ...
        else:
            store(uri, encode_png(pixels))                             # lossless; decode_png() reads it back

Every decoded image comes out as RGB uint8 of shape ``(size, size, 3)``: transparent pixels are composited
over black (the world's background), 16-bit images are rescaled rather than clipped, and the picture is
center-cropped to a square and then resized (BOX when shrinking, NEAREST when enlarging).

Listing accounts for every entry under the source: image files (by suffix) are read, and everything else
is reported as skipped with a reason ("unsupported-suffix", "folder", "hidden"; a hidden folder is one entry,
its contents are not listed), so nothing vanishes silently.

A file that cannot become such an array raises ``ImageRejected`` with a short ``reason``; the pixel limit is
checked from the header before any pixel data is decoded. ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never
touched, so truncated files are rejected rather than padded with grey.
"""

from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
DEFAULT_MAX_PIXELS = 50_000_000

# Modes whose samples are wider than 8 bits: PIL's own convert("L") clips them to 0..255 instead of scaling.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_SIXTEEN_BIT_MAX = 65535


class ImageRejected(ValueError):
    """A file that cannot be ingested as an image; ``reason`` is a short machine-friendly tag."""

    def __init__(self, path: str, reason: str, detail: str = "") -> None:
        message = f"{path}: rejected ({reason})"
        if detail:
            message += f": {detail}"
        super().__init__(message)
        self.path = path
        self.reason = reason


class SourceNotFound(FileNotFoundError):
    """The folder or file named by a URI does not exist."""

    def __init__(self, uri: str) -> None:
        super().__init__(f"image source not found: {uri}")
        self.uri = uri


@dataclass(frozen=True)
class SourceListing:
    """Every entry under a source: the image files to read, and the rest with why each is skipped."""

    images: list[str] = field(default_factory=list)  # sorted, in the source URI's own scheme
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, "unsupported-suffix"|"folder"|"hidden")


def scan_source(uri: str, storage_options: dict[str, Any] | None = None) -> SourceListing:
    """List everything under ``uri`` (recursively): image files by suffix, every other entry as skipped.

    Folders are skipped entries themselves (their contents are listed). A name starting with '.' (file or
    folder) is one skipped "hidden" entry; what lies inside a hidden folder is not listed. A ``uri`` naming
    a single file lists just that file.
    """
    fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    # fsspec caches filesystem instances and their listings; a folder that gained files since the last call
    # would otherwise be listed stale.
    fs.invalidate_cache(root)
    if not fs.exists(root):
        raise SourceNotFound(uri)
    root = root.rstrip("/") or root
    images, skipped = [], []
    for path, info in fs.find(root, withdirs=True, detail=True).items():
        path = path.rstrip("/") or path
        is_dir = info.get("type") == "directory"
        if path == root and is_dir:
            continue
        parts = _relative_parts(path, root)
        if any(part.startswith(".") for part in parts[:-1]):
            continue  # inside a hidden folder, which is itself a skipped entry
        name = _uri_of(fs, path, uri)
        if parts and parts[-1].startswith("."):
            skipped.append((name, "hidden"))
        elif is_dir:
            skipped.append((name, "folder"))
        elif posixpath.splitext(path.lower())[1] not in IMAGE_SUFFIXES:
            skipped.append((name, "unsupported-suffix"))
        else:
            images.append(name)
    return SourceListing(sorted(images), sorted(skipped))


def list_image_files(uri: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """The image files under ``uri`` (recursively, by suffix), sorted; see ``scan_source`` for what is skipped."""
    return scan_source(uri, storage_options).images


def _uri_of(fs, path: str, uri: str) -> str:
    """A listed path in the source URI's own scheme; a relative local path comes back from fsspec as
    "cwd/../x", so it is normalised to a clean absolute path."""
    return fs.unstrip_protocol(path) if "://" in uri else posixpath.normpath(path)


def _relative_parts(path: str, root: str) -> list[str]:
    """The parts of ``path`` below ``root`` (just its own name when it is the root, a single file)."""
    relative = posixpath.relpath(path, root) if path != root else posixpath.basename(path)
    return [part for part in relative.split("/") if part not in ("", ".")]


def read_image(
    uri: str,
    size: int,
    storage_options: dict[str, Any] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Read one image file from a path or fsspec URL and return it as uint8 ``(size, size, 3)`` RGB."""
    suffix = posixpath.splitext(uri.lower())[1]
    if suffix not in IMAGE_SUFFIXES:
        raise ImageRejected(uri, "unsupported-suffix", f"suffix {suffix or '(none)'!r}")
    try:
        with fsspec.open(uri, "rb", **(storage_options or {})) as handle:
            data = handle.read()
    except FileNotFoundError as missing:
        raise SourceNotFound(uri) from missing
    return decode_image(data, size, name=uri, max_pixels=max_pixels)


def decode_image(data: bytes, size: int, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode image bytes into uint8 ``(size, size, 3)`` RGB; ``name`` only appears in error messages."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if not data:
        raise ImageRejected(name, "zero-byte")
    image = _open_checked(data, name, max_pixels)
    _load_pixels(image, name)
    rgb = _to_rgb(_upright(image))
    return np.asarray(_square_resize(rgb, size), dtype=np.uint8)


def _open_checked(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and reject images whose declared size is over the pixel limit."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as bomb:
        raise ImageRejected(name, "too-large", str(bomb)) from bomb
    except UnidentifiedImageError as unknown:
        raise ImageRejected(name, "not-an-image") from unknown
    except (OSError, ValueError, SyntaxError, EOFError) as broken:
        raise ImageRejected(name, "corrupt", str(broken)) from broken
    width, height = image.size
    # PIL's own bomb limit (MAX_IMAGE_PIXELS) also applies, so that PIL never has to warn or raise later.
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    if width * height > limit:
        raise ImageRejected(name, "too-large", f"{width}x{height} exceeds {limit} pixels")
    if width <= 0 or height <= 0:
        raise ImageRejected(name, "corrupt", f"empty image {width}x{height}")
    return image


def _load_pixels(image: Image.Image, name: str) -> None:
    """Decode the (first frame's) pixel data, sorting decoder failures into "truncated" or "corrupt"."""
    try:
        image.load()
    except Image.DecompressionBombError as bomb:
        raise ImageRejected(name, "too-large", str(bomb)) from bomb
    except EOFError as ended:
        raise ImageRejected(name, "truncated", str(ended) or "unexpected end of data") from ended
    except OSError as failed:
        reason = "truncated" if "truncated" in str(failed).lower() else "corrupt"
        raise ImageRejected(name, reason, str(failed)) from failed
    except (ValueError, SyntaxError, MemoryError) as failed:
        raise ImageRejected(name, "corrupt", str(failed)) from failed


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation, so phone photos are not ingested sideways; broken EXIF is ignored."""
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB, compositing transparency over black."""
    if image.mode in _SIXTEEN_BIT_MODES:
        return _wide_grey_to_rgb(image)
    if image.mode == "F":
        return _float_grey_to_rgb(image)
    if "A" in image.getbands() or "transparency" in image.info:
        return _over_black(image.convert("RGBA"))
    return image.convert("RGB")


def _wide_grey_to_rgb(image: Image.Image) -> Image.Image:
    """Scale 16-bit grey (0..65535) to 8-bit with rounding: 65535 -> 255, 32768 -> 128."""
    samples = np.clip(np.asarray(image).astype(np.int64), 0, _SIXTEEN_BIT_MAX)
    grey = ((samples * 255 + _SIXTEEN_BIT_MAX // 2) // _SIXTEEN_BIT_MAX).astype(np.uint8)
    return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2))


def _float_grey_to_rgb(image: Image.Image) -> Image.Image:
    """Map float grey to 8-bit: values within 0..1 are treated as unit range, anything else as 0..255."""
    samples = np.nan_to_num(np.asarray(image, dtype=np.float64))
    if samples.size and samples.min() >= 0.0 and samples.max() <= 1.0:
        samples = samples * 255.0
    grey = np.clip(np.rint(samples), 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2))


def _over_black(rgba: Image.Image) -> Image.Image:
    """Composite RGBA over a black background: colour * alpha / 255, rounded."""
    pixels = np.asarray(rgba).astype(np.uint32)
    alpha = pixels[:, :, 3:4]
    rgb = (pixels[:, :, :3] * alpha + 127) // 255
    return Image.fromarray(rgb.astype(np.uint8))


def _square_resize(image: Image.Image, size: int) -> Image.Image:
    """Center-crop to a square, then resize: BOX averages when shrinking, NEAREST keeps pixels crisp when enlarging."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    if side == size:
        return square
    resample = Image.Resampling.BOX if side > size else Image.Resampling.NEAREST
    return square.resize((size, size), resample=resample)


def encode_png(image: np.ndarray) -> bytes:
    """Encode a uint8 ``(H, W, 3)`` RGB array as lossless PNG bytes for storage."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """Decode PNG bytes written by ``encode_png`` back into a uint8 ``(H, W, 3)`` RGB array."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
