"""LanceDB table verbs on a real temporary database: idempotent upserts, stale-row removal."""

import shutil
from pathlib import Path

import pandas as pd
import pytest

from storage.settings import Settings
from storage.tables import connect, count, current_versions, read, upsert


def _votes(n: int, round_idx: int = 0, majority: str = "red") -> list[dict]:
    return [{"question_id": f"r{round_idx}:q{i:03d}", "round_idx": round_idx, "n_samples": 7, "majority": majority,
             "majority_fraction": 0.5, "answer_entropy": 1.0, "margin": 0.1, "sample_ste_mean": 0.2,
             "theta_easy": 0.15, "bucket": "medium"} for i in range(n)]


@pytest.fixture
def db(asg_home):
    return connect(Settings.from_env())


def test_upsert_twice_gives_the_same_rows(db):
    upsert(db, "votes", _votes(25))
    first = read(db, "votes").sort_values("question_id").reset_index(drop=True)
    upsert(db, "votes", _votes(25))
    second = read(db, "votes").sort_values("question_id").reset_index(drop=True)
    assert len(first) == 25 == count(db, "votes")  # more than LanceDB's default search limit of 10
    pd.testing.assert_frame_equal(first, second)


def test_upsert_updates_matches_and_replace_where_drops_stale_rows_of_that_slice_only(db):
    upsert(db, "votes", _votes(10, round_idx=0))
    upsert(db, "votes", _votes(4, round_idx=1))
    upsert(db, "votes", _votes(6, round_idx=0, majority="blue"), replace_where="round_idx = 0")
    round0 = read(db, "votes", where="round_idx = 0")
    assert len(round0) == 6 and set(round0["majority"]) == {"blue"}
    assert count(db, "votes", "round_idx = 1") == 4


def test_bad_rows_are_refused_and_nothing_is_written(db):
    rows = _votes(3)
    with pytest.raises(ValueError, match="repeat keys"):
        upsert(db, "votes", rows + rows[:1])
    with pytest.raises(ValueError, match="lack columns"):
        upsert(db, "votes", pd.DataFrame([{"question_id": "x"}]))
    with pytest.raises(ValueError, match="unknown table 'nope'"):
        upsert(db, "nope", rows)
    assert count(db, "votes") == 0


def test_rows_held_as_arrow_batches_write_the_same_rows_as_dicts_and_are_checked_the_same_way(db):
    from storage.row_batches import RowBatches

    votes = [{**v, "informativeness": 0.5, "proposer_reward": 0.25} for v in _votes(10)]  # every column: strict
    batches = RowBatches("votes", batch_rows=4)  # 10 rows: two full batches and two pending rows
    for row in votes:
        batches.append(row)
    assert len(batches) == 10 and batches.table()["question_id"].to_pylist() == [r["question_id"] for r in votes]
    upsert(db, "votes", batches.table(), replace_where="round_idx = 0")
    other = connect(Settings.from_env().within("dicts"))
    upsert(other, "votes", votes, replace_where="round_idx = 0")
    pd.testing.assert_frame_equal(read(db, "votes").sort_values("question_id").reset_index(drop=True),
                                  read(other, "votes").sort_values("question_id").reset_index(drop=True))
    repeated = RowBatches("votes")
    for row in votes[:3] + votes[:1]:
        repeated.append(row)
    with pytest.raises(ValueError, match=r"repeat keys, e.g. \['r0:q000'\]"):
        upsert(db, "votes", repeated.table())
    with pytest.raises(ValueError, match="lack columns"):
        RowBatches("votes", batch_rows=1).append({"question_id": "x"})
    assert count(db, "votes") == 10


def test_staged_shard_rows_as_arrow_sort_across_shards_drop_extra_columns_and_empty_a_slice(db):
    from storage.arrow_rows import ArrowRows
    from storage.shard_files import write_shard
    from tasks.sharded_stage import StagedRows

    settings = Settings.from_env()
    votes = [{**v, "informativeness": 0.5, "proposer_reward": 0.25, "ste_difficulty": 0.1} for v in _votes(9)]
    for shard in range(2):  # each shard's rows made a chunk at a time; shard 0 holds the odd rows, in reverse
        rows = ArrowRows()
        mine = [v for i, v in enumerate(votes) if i % 2 != shard][::-1]
        rows.extend(mine[:2])
        rows.extend(mine[2:])
        assert len(rows) == len(mine)
        write_shard(settings, 0, "solve", "votes", shard, 2, rows.table())
    staged = StagedRows(settings, 0, "solve", 2)
    table = staged.table("votes", sort_by="question_id")
    assert table["question_id"].to_pylist() == [v["question_id"] for v in votes]
    assert "ste_difficulty" in table.column_names  # the merge's own column, not stored
    upsert(db, "votes", table, replace_where="round_idx = 0")
    stored = read(db, "votes").sort_values("question_id")
    assert stored["question_id"].tolist() == [v["question_id"] for v in votes]
    assert "ste_difficulty" not in stored.columns
    upsert(db, "votes", ArrowRows().table(), replace_where="round_idx = 0")  # a round with no rows empties it
    assert count(db, "votes") == 0


def test_a_slice_writer_replaces_its_slice_across_several_writes_and_a_rerun_converges(db):
    from storage.slice_writer import SliceWriter

    votes = [{**v, "informativeness": 0.5, "proposer_reward": 0.25} for v in _votes(10)]
    upsert(db, "votes", [{**v, "question_id": "r0:stale"} for v in votes[:1]])  # an earlier run's leftover row
    upsert(db, "votes", [{**v, "round_idx": 1, "question_id": f"r1:{v['question_id']}"} for v in votes[:2]])
    for run in range(2):  # the stage, then its re-run
        writer = SliceWriter(db, "votes", "round_idx = 0", write_rows=4)
        versions = []
        for row in votes:
            writer.append(row)
            versions.append(writer.version)
        assert len({v for v in versions if v is not None}) == 2  # written after 4 and 8 rows, not held to the end
        version = writer.close()
        assert len(writer) == 10 and writer.written == 10
        frame = read(db, "votes", where="round_idx = 0")
        assert sorted(frame["question_id"]) == [v["question_id"] for v in votes]  # the stale row is gone
        assert count(db, "votes", "round_idx = 1") == 2 and version == db.open_table("votes").version
    empty = SliceWriter(db, "votes", "round_idx = 0")
    empty.close()
    assert count(db, "votes", "round_idx = 0") == 0 and count(db, "votes") == 2


def test_reading_a_missing_table_gives_an_empty_frame_with_columns(db):
    frame = read(db, "answers", columns=["answer_id", "text"])
    assert frame.empty and list(frame.columns) == ["answer_id", "text"]


def test_a_table_whose_creation_a_kill_interrupted_counts_as_absent_and_is_created_on_the_next_write(db):
    """SIGKILL inside LanceDB's create_table leaves `<name>.lance/` with only `_transactions`: listed, not openable
    (seen in the chaos test's kill inside ingest). Reproduced here by removing a fresh table's first version."""
    upsert(db, "votes", _votes(2))
    folder = Path(Settings.from_env().lancedb_uri) / "votes.lance"
    shutil.rmtree(folder / "_versions")
    assert "votes" in db.list_tables().tables
    with pytest.raises(ValueError, match="was not found"):
        db.open_table("votes")
    assert read(db, "votes").empty and count(db, "votes") == 0 and "votes" not in current_versions(db)
    upsert(db, "votes", _votes(3))
    assert count(db, "votes") == 3 and sorted(read(db, "votes")["question_id"]) == [f"r0:q{i:03d}" for i in range(3)]


def test_ste_window_and_entropy_history_persist_across_rounds(db):
    """The rolling windows are read back from the tables, so a restarted process continues them."""
    from tasks.propose import ste_history
    from tasks.solve import entropy_history

    questions = [{"question_id": f"r{r}:img{i:03d}:k0", "round_idx": r, "image_id": f"img{i:03d}", "candidate_idx": 0,
                  "raw_text": "", "question": "", "validator_a": "", "validator_b": "", "well_formed": True,
                  "reject_reason": "", "greedy_answer": "", "ste_raw": float(r * 1000 + i), "ste_difficulty": 0.5,
                  "selected": True} for r in (0, 1) for i in range(100)]
    upsert(db, "questions", questions)
    history = ste_history(db, round_idx=2)
    assert len(history) == 128  # the last 128 of 200 stored values, oldest first
    assert history[0] == 72.0 and history[-1] == 1099.0
    assert ste_history(db, round_idx=0) == []
    upsert(db, "votes", _votes(300, round_idx=0))
    assert len(entropy_history(db, round_idx=1)) == 256 and entropy_history(db, round_idx=0) == []


def test_train_progress_round_trips_and_a_save_replaces_the_last_whole(asg_home):
    import numpy as np

    from storage.train_progress import load_progress, progress_folder, remove_progress, save_progress

    settings = Settings.from_env()
    assert load_progress(settings, 2, "k" * 40, "solver") is None
    arrays = {"param.0": np.arange(6, dtype=np.float32).reshape(2, 3), "rng": np.arange(5, dtype=np.uint8),
              "adam.0.step": np.asarray(7.0, dtype=np.float32)}
    save_progress(settings, 2, "k" * 40, "solver", arrays, step=7, losses=[1.5, 0.25])
    save_progress(settings, 2, "k" * 40, "solver", {**arrays, "param.0": arrays["param.0"] * 2}, step=9,
                  losses=[1.5, 0.25, 0.125])
    step, losses, got = load_progress(settings, 2, "k" * 40, "solver")
    assert (step, losses) == (9, [1.5, 0.25, 0.125])
    assert np.array_equal(got["param.0"], arrays["param.0"] * 2) and got["adam.0.step"].shape == ()
    folder = Path(progress_folder(settings, 2, "k" * 40))
    assert sorted(p.name for p in folder.iterdir()) == ["solver.safetensors"]  # no partial file left beside it
    remove_progress(settings, 2, "k" * 40)
    assert not folder.exists() and load_progress(settings, 2, "k" * 40, "solver") is None
