"""Ingest stage on real files: every good image stored once, every bad file recorded with a reason, every path
accounted for (ingested, duplicate, rejected or skipped) in the metrics and in `image_sources`."""

import pandas as pd
import pytest
from PIL import Image

from storage.image_files import SourceNotFound, decode_png
from storage.settings import Settings
from storage.tables import connect, read, sql_quote
from tasks.ingest import INGEST, ingest_source, parse_world_source
from tasks.logic.file_accounting import ingest_counts, summary_line
from tasks.round_inputs import round_image_ids


def _folder(tmp_path):
    """3 distinct images, 3 duplicates of red.png after resizing to 32, 3 broken files, 4 skipped entries."""
    folder = tmp_path / "pool"
    (folder / "nested").mkdir(parents=True)
    Image.new("RGB", (64, 64), (230, 30, 30)).save(folder / "red.png")
    Image.new("RGBA", (40, 40), (40, 70, 240, 255)).save(folder / "nested" / "blue.webp")
    Image.new("P", (32, 32), 3).save(folder / "palette.gif")
    Image.new("RGB", (64, 64), (230, 30, 30)).save(folder / "red-copy.bmp")  # same pixels as red.png
    Image.new("RGB", (128, 128), (230, 30, 30)).save(folder / "red-big.png")  # the same after resizing
    (folder / "nested" / "red.png").write_bytes((folder / "red.png").read_bytes())  # a plain copy
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("not an image")
    png = (folder / "red.png").read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "readme.txt").write_text("hello")
    (folder / ".DS_Store").write_bytes(b"x")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "thumb.png").write_bytes(png)  # inside a hidden folder: the folder is the entry
    return folder


def _counts(result):
    return {k: v for k, v in result.metrics.items() if k != "seconds"}


def _name(path):
    return path.rsplit("/pool/", 1)[-1]


def test_folder_ingest_keeps_good_images_and_records_bad_ones(asg_home, tmp_path):
    folder = _folder(tmp_path)
    result = ingest_source(str(folder), image_size=32)
    db = connect(Settings.from_env())
    images = read(db, "images")
    errors = read(db, "ingest_errors").sort_values("path")
    assert len(images) == 3  # the four red files are one image
    assert _counts(result) == {"files_seen": 13, "ingested": 3, "duplicates": 3, "duplicates_of_stored": 0,
                               "duplicates_in_ingest": 3, "rejected": 3, "skipped": 4}
    assert result.metrics["seconds"] > 0
    assert summary_line(result.metrics) == "ingest: 13 files seen = 3 ingested + 3 duplicates + 3 rejected + 4 skipped"
    reasons = dict(zip(errors["path"].map(_name), errors["reason"]))
    assert reasons == {"empty.png": "zero-byte", "notes.png": "not-an-image", "truncated.png": "truncated"}
    red = images[images["source_uri"].str.endswith("/pool/nested/red.png")]  # first in sorted order
    pixels = decode_png(red["png"].iloc[0])
    assert pixels.shape == (32, 32, 3) and tuple(pixels[5, 5]) == (230, 30, 30)


def test_every_path_is_in_image_sources_with_its_image_or_reason(asg_home, tmp_path):
    folder = _folder(tmp_path)
    ingest_source(str(folder), image_size=32)
    db = connect(Settings.from_env())
    sources = read(db, "image_sources").sort_values("path").reset_index(drop=True)
    rows = {_name(p): (s, r, o and _name(o)) for p, s, r, o in
            zip(sources["path"], sources["status"], sources["reason"], sources["original_uri"])}
    assert rows == {
        "nested/red.png": ("original", "", "nested/red.png"), "nested/blue.webp": ("original", "", "nested/blue.webp"),
        "palette.gif": ("original", "", "palette.gif"), "red-copy.bmp": ("duplicate", "", "nested/red.png"),
        "red-big.png": ("duplicate", "", "nested/red.png"), "red.png": ("duplicate", "", "nested/red.png"),
        "empty.png": ("rejected", "zero-byte", ""), "notes.png": ("rejected", "not-an-image", ""),
        "truncated.png": ("rejected", "truncated", ""), "readme.txt": ("skipped", "unsupported-suffix", ""),
        "nested": ("skipped", "folder", ""), ".DS_Store": ("skipped", "hidden", ""),
        ".cache": ("skipped", "hidden", "")}
    images = read(db, "images").set_index("source_uri")["image_id"]
    red_id = images[str(folder / "nested" / "red.png")]
    assert sorted(sources.loc[sources["image_id"] == red_id, "path"].map(_name)) == [
        "nested/red.png", "red-big.png", "red-copy.bmp", "red.png"]
    stored = sources[sources["status"] == "original"]
    assert dict(zip(stored["path"], stored["image_id"])) == images.to_dict()


def test_reingesting_counts_everything_as_stored_and_writes_no_new_rows(asg_home, tmp_path):
    folder = _folder(tmp_path)
    ingest_source(str(folder), image_size=32)
    db = connect(Settings.from_env())
    before = {t: read(db, t).drop(columns=["png"], errors="ignore").sort_values(read(db, t).columns[0])
              .reset_index(drop=True) for t in ("images", "ingest_errors", "image_sources")}
    again = ingest_source(str(folder), image_size=32)
    assert _counts(again) == {"files_seen": 13, "ingested": 0, "duplicates": 6, "duplicates_of_stored": 6,
                              "duplicates_in_ingest": 0, "rejected": 3, "skipped": 4}
    for table, frame in before.items():
        now = read(db, table).drop(columns=["png"], errors="ignore")
        pd.testing.assert_frame_equal(now.sort_values(now.columns[0]).reset_index(drop=True), frame)


def test_duplicates_of_another_sources_images_point_at_the_stored_original(asg_home, tmp_path):
    folder = _folder(tmp_path)
    ingest_source(str(folder), image_size=32)
    more = tmp_path / "more"
    more.mkdir()
    (more / "blue-again.webp").write_bytes((folder / "nested" / "blue.webp").read_bytes())
    Image.new("RGB", (32, 32), (20, 200, 20)).save(more / "green.png")
    result = ingest_source(str(more), image_size=32)
    assert _counts(result) == {"files_seen": 2, "ingested": 1, "duplicates": 1, "duplicates_of_stored": 1,
                               "duplicates_in_ingest": 0, "rejected": 0, "skipped": 0}
    db = connect(Settings.from_env())
    copy = read(db, "image_sources", where=f"path = {sql_quote(str(more / 'blue-again.webp'))}").iloc[0]
    assert (copy["status"], copy["source"], copy["original_uri"]) == (
        "duplicate", str(more), str(folder / "nested" / "blue.webp"))
    blue = read(db, "images", where=f"image_id = {sql_quote(copy['image_id'])}").iloc[0]
    assert (blue["source"], blue["source_uri"]) == (str(folder), str(folder / "nested" / "blue.webp"))
    # a round on the second source draws both of its images, the one first stored from the pool too
    assert sorted(round_image_ids(db, str(more), 10, 0, 0)) == sorted(
        read(db, "image_sources", where=f"source = {sql_quote(str(more))}")["image_id"])


def test_sharded_ingest_accounts_for_the_same_files(asg_home, tmp_path):
    folder = _folder(tmp_path)
    args = {"source": str(folder), "image_size": 32}
    shards = [INGEST.tasks["shard"].fn("ingest", s, 3, args) for s in range(3)]  # staged in Parquet
    result = INGEST.tasks["merge"].fn("ingest", 3, args, {"source": str(folder)})
    assert sum(s.rows for s in shards) == 13
    assert _counts(result) == {"files_seen": 13, "ingested": 3, "duplicates": 3, "duplicates_of_stored": 0,
                               "duplicates_in_ingest": 3, "rejected": 3, "skipped": 4}
    db = connect(Settings.from_env())
    assert (len(read(db, "images")), len(read(db, "ingest_errors")), len(read(db, "image_sources"))) == (3, 3, 13)


def test_empty_folder_sees_nothing(asg_home, tmp_path):
    (tmp_path / "none").mkdir()
    result = ingest_source(str(tmp_path / "none"), image_size=32)
    assert summary_line(result.metrics) == "ingest: 0 files seen = 0 ingested + 0 duplicates + 0 rejected + 0 skipped"


def test_world_source_renders_the_unlabeled_split_without_labels(asg_home):
    result = ingest_source("world://unlabeled?n=12&seed=3", image_size=32)
    images = read(connect(Settings.from_env()), "images")
    assert result.rows == 12 == len(images)
    assert set(images.columns) == {"image_id", "source", "source_uri", "width", "height", "png"}
    assert images["source_uri"].str.startswith("world://unlabeled/3/").all()
    assert result.metrics["files_seen"] == 12 == result.metrics["ingested"] + result.metrics["duplicates"]
    assert len(read(connect(Settings.from_env()), "image_sources")) == 12


def test_bad_sources_name_themselves(asg_home, tmp_path):
    with pytest.raises(SourceNotFound, match="no-such-folder"):
        ingest_source(str(tmp_path / "no-such-folder"), image_size=32)
    with pytest.raises(ValueError, match="only the unlabeled split"):
        parse_world_source("world://eval?n=3")
    assert parse_world_source("world://unlabeled?n=5&seed=2") == ("unlabeled", 5, 2)


def test_counts_that_do_not_add_up_are_an_error():
    assert ingest_counts(3, ["ingested", "duplicate-in-ingest"], rejected=1, skipped=0)["duplicates"] == 1
    with pytest.raises(AssertionError, match="4 seen but 3 accounted for"):
        ingest_counts(4, ["ingested", "duplicate-of-stored"], rejected=1, skipped=0)
