"""Report stage: files a person looks at for a round (image grid, QA sample), for the flow to log."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from storage.image_files import decode_png
from storage.settings import Settings
from storage.tables import connect, read
from tasks.stage import stage_task


def image_grid(images: list[np.ndarray], columns: int, scale: int = 4, pad: int = 2) -> np.ndarray:
    """Tile images (each upscaled `scale` times, nearest) into one array with grey gutters."""
    h, w = images[0].shape[0] * scale, images[0].shape[1] * scale
    rows = (len(images) + columns - 1) // columns
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 96, dtype=np.uint8)
    for k, image in enumerate(images):
        r, c = divmod(k, columns)
        big = image.repeat(scale, 0).repeat(scale, 1)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = big
    return grid


@stage_task("report", "write-round-report")
def write_round_report(round_idx: int, out_dir: str, n_specs: int = 8, tables: dict[str, int] | None = None,
                       namespace: str = "") -> list[dict]:
    """Writes generations.png (rows of L images per spec, best reward first) and qa_sample.csv;
    returns the QA sample's rows (at most 50) for the flow to log as a table."""
    db = connect(Settings.from_env().within(namespace), at=tables)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gens = read(db, "generations", where=f"round_idx = {round_idx}", columns=["generation_id", "spec_id", "png"])
    scores = read(db, "scores", where=f"round_idx = {round_idx}", columns=["generation_id", "reward"])
    if len(gens):
        from PIL import Image

        frame = gens.merge(scores, on="generation_id").sort_values("generation_id")
        top = frame.groupby("spec_id")["reward"].max().sort_values(ascending=False).index[:n_specs]
        rows = [frame[frame["spec_id"] == s] for s in top]
        width = max(len(r) for r in rows)
        images = [decode_png(p) for r in rows for p in r["png"]]
        Image.fromarray(image_grid(images, columns=width)).save(out / "generations.png")
        (out / "generations.txt").write_text("\n".join(
            f"{s}: " + ", ".join(f"{v:.2f}" for v in r["reward"]) for s, r in zip(top, rows)))
    questions = read(db, "questions", where=f"round_idx = {round_idx} AND selected = true",
                     columns=["question_id", "question", "ste_raw", "ste_difficulty"])
    votes = read(db, "votes", where=f"round_idx = {round_idx}",
                 columns=["question_id", "majority", "majority_fraction", "answer_entropy", "bucket"])
    sample = questions.merge(votes, on="question_id").sort_values("question_id").head(50)
    sample.to_csv(out / "qa_sample.csv", index=False)
    return sample.to_dict("records")
