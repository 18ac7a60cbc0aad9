"""Ingest stage on real files: every good image stored once, every bad file recorded with a reason."""

import pytest
from PIL import Image

from storage.image_files import SourceNotFound, decode_png
from storage.settings import Settings
from storage.tables import connect, read
from tasks.ingest import ingest_source, parse_world_source


def _folder(tmp_path):
    folder = tmp_path / "pool"
    (folder / "nested").mkdir(parents=True)
    Image.new("RGB", (64, 64), (230, 30, 30)).save(folder / "red.png")
    Image.new("RGBA", (40, 40), (40, 70, 240, 255)).save(folder / "nested" / "blue.webp")
    Image.new("P", (32, 32), 3).save(folder / "palette.gif")
    Image.new("RGB", (64, 64), (230, 30, 30)).save(folder / "red-copy.bmp")  # same pixels as red.png
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("not an image")
    png = (folder / "red.png").read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "readme.txt").write_text("hello")
    return folder


def test_folder_ingest_keeps_good_images_and_records_bad_ones(asg_home, tmp_path):
    folder = _folder(tmp_path)
    result = ingest_source(str(folder), image_size=32)
    db = connect(Settings.from_env())
    images = read(db, "images")
    errors = read(db, "ingest_errors").sort_values("path")
    assert len(images) == 3  # red.png and red-copy.bmp are one image
    counts = {k: v for k, v in result.metrics.items() if k != "seconds"}
    assert counts == {"images_ingested": 3, "images_rejected": 4} and result.metrics["seconds"] > 0
    reasons = dict(zip(errors["path"].map(lambda p: p.rsplit("/", 1)[-1]), errors["reason"]))
    assert reasons == {"empty.png": "zero-byte", "notes.png": "not-an-image", "truncated.png": "truncated",
                       "readme.txt": "unsupported-suffix"}
    red = images[images["source_uri"].str.endswith("red.png") | images["source_uri"].str.endswith("red-copy.bmp")]
    pixels = decode_png(red["png"].iloc[0])
    assert pixels.shape == (32, 32, 3) and tuple(pixels[5, 5]) == (230, 30, 30)

    again = ingest_source(str(folder), image_size=32)
    assert {k: v for k, v in again.metrics.items() if k != "seconds"} == counts
    assert len(read(db, "images")) == 3 and len(read(db, "ingest_errors")) == 4


def test_world_source_renders_the_unlabeled_split_without_labels(asg_home):
    result = ingest_source("world://unlabeled?n=12&seed=3", image_size=32)
    images = read(connect(Settings.from_env()), "images")
    assert result.rows == 12 == len(images)
    assert set(images.columns) == {"image_id", "source", "source_uri", "width", "height", "png"}
    assert images["source_uri"].str.startswith("world://unlabeled/3/").all()


def test_bad_sources_name_themselves(asg_home, tmp_path):
    with pytest.raises(SourceNotFound, match="no-such-folder"):
        ingest_source(str(tmp_path / "no-such-folder"), image_size=32)
    with pytest.raises(ValueError, match="only the unlabeled split"):
        parse_world_source("world://eval?n=3")
    assert parse_world_source("world://unlabeled?n=5&seed=2") == ("unlabeled", 5, 2)
