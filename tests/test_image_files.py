"""Behaviour tests for storage/image_files.py: formats, modes, rejections, listing, and reading through s3://.

Run with ``.venv/bin/python -m pytest tests/test_image_files.py -q``. The S3 test starts moto's
ThreadedMotoServer on 127.0.0.1 with an ephemeral port and stops it afterwards.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from storage.image_files import (
    IMAGE_SUFFIXES,
    ImageRejected,
    SourceNotFound,
    decode_image,
    decode_png,
    encode_png,
    list_image_files,
    read_image,
    scan_source,
)

SIZE = 32
RED = (200, 30, 40)


def _save(image: Image.Image, path: Path, **params: object) -> Path:
    image.save(path, **params)
    return path


def _solid(mode: str, colour: object, size: tuple[int, int] = (40, 40)) -> Image.Image:
    return Image.new(mode, size, colour)


def _read(path: Path) -> np.ndarray:
    pixels = read_image(str(path), SIZE)
    assert pixels.shape == (SIZE, SIZE, 3)
    assert pixels.dtype == np.uint8
    return pixels


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# --- formats -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".tiff", ".gif"])
def test_lossless_formats_keep_exact_colour(tmp_path: Path, suffix: str) -> None:
    path = _save(_solid("RGB", RED), tmp_path / f"red{suffix}")
    assert (_read(path) == RED).all()


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".webp"])
def test_lossy_formats_stay_close(tmp_path: Path, suffix: str) -> None:
    path = _save(_solid("RGB", RED), tmp_path / f"red{suffix}", quality=95)
    assert np.abs(_read(path).astype(int) - RED).max() <= 4


def test_animated_gif_gives_first_frame(tmp_path: Path) -> None:
    frames = [_solid("RGB", (255, 0, 0)), _solid("RGB", (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 2
    assert (_read(path) == (255, 0, 0)).all()


# --- modes ---------------------------------------------------------------------------------------------


def test_rgba_transparent_becomes_black_and_half_alpha_is_scaled(tmp_path: Path) -> None:
    image = _solid("RGBA", (255, 255, 255, 0))
    image.paste((200, 100, 50, 128), (0, 20, 40, 40))  # bottom half half-transparent
    pixels = _read(_save(image, tmp_path / "alpha.png"))
    assert (pixels[:15] == 0).all()
    assert (pixels[-15:] == (100, 50, 25)).all()  # round(c * 128 / 255)


def test_la_transparent_becomes_black(tmp_path: Path) -> None:
    assert (_read(_save(_solid("LA", (255, 0)), tmp_path / "la.png")) == 0).all()


def test_palette_image_and_palette_transparency(tmp_path: Path) -> None:
    palette_image = _solid("RGB", (10, 220, 30)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert (_read(_save(palette_image, tmp_path / "p.png")) == (10, 220, 30)).all()

    transparent = Image.new("P", (40, 40), 1)
    transparent.putpalette([0, 0, 0, 250, 250, 250] + [0] * 762)
    path = _save(transparent, tmp_path / "p_transparent.gif", transparency=1)
    assert (_read(path) == 0).all()


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = _save(_solid("CMYK", (0, 255, 255, 0)), tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    pixels = _read(path).astype(int)
    assert np.abs(pixels - (255, 0, 0)).max() <= 4


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    samples = np.full((40, 40), 65535, dtype=np.uint16)
    samples[20:] = 32768
    path = _save(Image.fromarray(samples), tmp_path / "grey16.png")
    assert Image.open(path).mode.startswith("I")
    pixels = _read(path)
    assert (pixels[:15] == 255).all()
    assert (pixels[-15:] == 128).all()


def test_grey_and_bilevel(tmp_path: Path) -> None:
    assert (_read(_save(_solid("L", 77), tmp_path / "l.png")) == 77).all()
    bilevel = _solid("1", 0)
    bilevel.paste(1, (0, 20, 40, 40))
    pixels = _read(_save(bilevel, tmp_path / "one.png"))
    assert (pixels[:15] == 0).all()
    assert (pixels[-15:] == 255).all()


# --- geometry ------------------------------------------------------------------------------------------


def test_wide_image_is_center_cropped_then_box_downscaled() -> None:
    image = np.zeros((64, 128, 3), dtype=np.uint8)
    image[:, 32:96] = (0, 255, 0)  # the centre square is green, the sides black
    image[:32, 32] = (255, 255, 255)  # a 1x32 white line: each 2x2 box averages it with green
    pixels = decode_image(encode_png(image), SIZE, name="wide")
    assert pixels.shape == (SIZE, SIZE, 3)
    assert (pixels[:, 1:] == (0, 255, 0)).all()
    assert (pixels[:16, 0] == (128, 255, 128)).all()
    assert (pixels[16:, 0] == (0, 255, 0)).all()


def test_small_image_is_upscaled_with_nearest() -> None:
    checker = np.array([[[0, 0, 0], [255, 255, 255]], [[255, 255, 255], [0, 0, 0]]], dtype=np.uint8)
    pixels = decode_image(encode_png(checker), SIZE, name="tiny")
    assert set(np.unique(pixels).tolist()) == {0, 255}  # no interpolated greys
    assert (pixels[:16, :16] == 0).all() and (pixels[:16, 16:] == 255).all()


def test_png_round_trip_is_lossless() -> None:
    image = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    assert np.array_equal(decode_png(encode_png(image)), image)
    with pytest.raises(ValueError):
        encode_png(image.astype(np.float32))


# --- rejections ----------------------------------------------------------------------------------------


def _reason(path: Path, **kwargs: object) -> str:
    with pytest.raises(ImageRejected) as caught:
        read_image(str(path), SIZE, **kwargs)
    assert str(path) in str(caught.value)
    return caught.value.reason


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert _reason(path) == "zero-byte"


def test_text_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n" * 20)
    assert _reason(path) == "not-an-image"


def test_truncated_png(tmp_path: Path) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _png_bytes(Image.fromarray(noise))
    path = tmp_path / "half.png"
    path.write_bytes(data[: len(data) // 2])
    assert _reason(path) == "truncated"


def test_corrupt_jpeg(tmp_path: Path) -> None:
    noise = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG")
    data = buffer.getvalue()
    header_end = data.index(b"\xff\xda") + 14  # start-of-scan segment: everything before it is a valid header
    garbage = np.random.default_rng(3).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    path = tmp_path / "broken.jpg"
    path.write_bytes(data[:header_end] + garbage + b"\xff\xd9")
    assert _reason(path) == "corrupt"


def _png_claiming_size(width: int, height: int) -> bytes:
    """A 1x1 grey PNG whose IHDR is rewritten (with a fixed CRC) to declare width x height."""
    data = bytearray(_png_bytes(_solid("L", 0, (1, 1))))
    ihdr = bytearray(data[12:29])  # chunk type + 13 data bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


# 10000x10000 is also over PIL's own bomb limit, which warns from Image.open before our check rejects it.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_header_over_pixel_limit_is_too_large(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(_png_claiming_size(10_000, 10_000))
    assert _reason(path, max_pixels=1_000_000) == "too-large"


def test_real_image_over_pixel_limit_is_too_large(tmp_path: Path) -> None:
    path = _save(_solid("1", 0, (1200, 1000)), tmp_path / "big.png")
    assert _reason(path, max_pixels=1_000_000) == "too-large"
    assert _read(path).shape == (SIZE, SIZE, 3)  # the default limit lets it through


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = _save(_solid("RGB", RED), tmp_path / "red.png")
    renamed = path.rename(tmp_path / "red.txt")
    assert _reason(renamed) == "unsupported-suffix"
    assert ".txt" not in IMAGE_SUFFIXES


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFound, match="gone.png"):
        read_image(str(tmp_path / "gone.png"), SIZE)


# --- listing -------------------------------------------------------------------------------------------


def _nested_folder(root: Path) -> list[Path]:
    files = [root / "b.png", root / "a" / "z.jpg", root / "a" / "deeper" / "c.gif", root / "readme.txt"]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (root / ".DS_Store").write_bytes(b"x")
    (root / ".cache").mkdir()
    (root / ".cache" / "hidden.png").write_bytes(b"x")
    return files


def test_list_nested_local_folder(tmp_path: Path) -> None:
    files = _nested_folder(tmp_path / "images")
    expected = sorted(str(path) for path in files if path.suffix != ".txt")
    assert list_image_files(str(tmp_path / "images")) == expected
    assert list_image_files(f"file://{tmp_path / 'images'}") == [f"file://{path}" for path in expected]


def test_scan_reports_every_entry_it_does_not_read(tmp_path: Path) -> None:
    root = tmp_path / "images"
    _nested_folder(root)
    (root / "empty").mkdir()
    listing = scan_source(str(root))
    assert listing.images == list_image_files(str(root))
    assert listing.skipped == [(str(root / name), reason) for name, reason in (
        (".DS_Store", "hidden"), (".cache", "hidden"), ("a", "folder"), ("a/deeper", "folder"), ("empty", "folder"),
        ("readme.txt", "unsupported-suffix"))]  # .cache/hidden.png is inside the hidden folder's one entry
    single = scan_source(str(root / "readme.txt"))
    assert (single.images, single.skipped) == ([], [(str(root / "readme.txt"), "unsupported-suffix")])


def test_list_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFound, match="nowhere"):
        list_image_files(str(tmp_path / "nowhere"))


# --- s3 through moto -----------------------------------------------------------------------------------


@pytest.fixture
def s3_options() -> Iterator[dict[str, str]]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield {"key": "test", "secret": "test", "endpoint_url": f"http://{host}:{port}"}
    finally:
        server.stop()


@pytest.mark.integration
def test_list_and_read_through_s3(s3_options: dict[str, str]) -> None:
    import s3fs

    # skip_instance_cache: a cached client from an earlier test would point at a stopped moto port.
    fs = s3fs.S3FileSystem(**s3_options, skip_instance_cache=True)
    fs.mkdir("images")
    fs.pipe("images/raw/one.png", _png_bytes(_solid("RGB", RED)))
    fs.pipe("images/raw/sub/two.png", _png_bytes(_solid("L", 90)))

    listed = list_image_files("s3://images/raw", s3_options)
    assert listed == ["s3://images/raw/one.png", "s3://images/raw/sub/two.png"]
    assert (read_image(listed[0], SIZE, s3_options) == RED).all()
    assert (read_image(listed[1], SIZE, s3_options) == 90).all()
    with pytest.raises(SourceNotFound, match="s3://images/missing"):
        list_image_files("s3://images/missing", s3_options)
