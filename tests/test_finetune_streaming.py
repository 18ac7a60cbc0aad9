"""The fine-tune stage loads only the examples its steps visit, a window of batches at a time: the batches an update
sees are exactly those drawn from the whole example list, while only a window's share of the store is ever held."""

import itertools

import numpy as np

from storage.image_files import encode_png
from storage.settings import Settings
from storage.tables import connect, upsert
from tasks.finetune import StoredExamples, _mixed, examples_by_id, stored_example_ids, stored_examples
from tasks.logic.visit_plan import own_indices, visit_batches


def _store(n_images: int, per_image: int):
    db = connect(Settings.from_env())
    rng = np.random.default_rng(0)
    images = [{"image_id": f"img{i:03d}", "source": "test", "source_uri": f"mem://{i}", "width": 32, "height": 32,
               "png": encode_png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))} for i in range(n_images)]
    upsert(db, "images", images)
    compositions = [{"composition_id": f"cmp{i:03d}", "round_idx": 0, "image_id": f"img{i:03d}", "placement_json": "[]",
                     "objects_json": "[]", "caption": "", "questions_json": "[]", "greedy_json": "[]",
                     "png": encode_png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))} for i in range(n_images)]
    upsert(db, "compositions", compositions)
    rows = []
    for i in range(n_images):
        for j in range(per_image):
            table, key = ("images", f"img{i:03d}") if j % 2 else ("compositions", f"cmp{i:03d}")
            rows.append({"example_id": f"ex{i:03d}-{j}", "round_idx": 0, "role": "solver", "kind": "vqa",
                         "source_id": key, "image_table": table, "image_key": key, "prompt": f"question {j}?",
                         "target": str(j), "framing": "canonical", "weight": 1.0 + j, "reward": 0.0,
                         "advantage": 0.0})
    upsert(db, "training_examples", rows)
    return db


def _key(example):
    return (example.kind, example.prompt, example.target, example.framing, example.weight, example.draw,
            example.image.tobytes())


def test_an_update_sees_the_same_batches_from_its_visited_examples_as_from_all_of_them(asg_home):
    db = _store(n_images=40, per_image=5)
    ids = stored_example_ids(db, 0, "solver")
    every = stored_examples(db, 0, "solver")
    assert len(ids) == len(every) == 200
    # Training order: the images table's examples first, then the compositions', each by id.
    assert ids[:2] == ["ex000-1", "ex000-3"] and ids[80] == "ex000-0"
    assert [e.prompt for e in examples_by_id(db, ids[:3])] == ["question 1?", "question 3?", "question 1?"]
    replay = every[:7]
    windows: list[set[int]] = []

    class Recorded(StoredExamples):
        def window(self, indices):
            windows.append(set(indices))
            return super().window(indices)

    stored = Recorded(db, ids)
    assert len(stored) == 200 and _key(stored[80]) == _key(every[80])
    from_all = list(itertools.islice(_mixed(every, replay, 0.5, 8, 11), 6))
    from_windows = list(itertools.islice(_mixed(stored, replay, 0.5, 8, 11, window=2), 6))
    assert [[_key(e) for e in b] for b in from_windows] == [[_key(e) for e in b] for b in from_all]
    # 6 steps in windows of 2 batches of 8: three reads, each of at most 16 of the 200, together the plan's visits
    assert len(windows) == 3 and all(0 < len(w) <= 16 for w in windows)
    assert set().union(*windows) == own_indices(visit_batches(200, 7, 0.5, 8, 11, 6))
    assert [e.draw for e in from_all[1]] == list(range(9, 17))  # every visit its own draw, counted across batches


def test_a_visit_plan_without_own_examples_is_refused_in_one_line():
    try:
        visit_batches(0, 5, 0.5, 4, seed=0, n_batches=1)
    except ValueError as error:
        assert str(error) == "no own examples to visit (n_own=0, n_replay=5, replay_fraction=0.5)"
    else:
        raise AssertionError("expected a ValueError")
    assert visit_batches(0, 5, 1.0, 2, seed=0, n_batches=1)[0][0][0] == "replay"
