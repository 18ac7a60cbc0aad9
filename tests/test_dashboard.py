"""The dashboard over a real temporary LanceDB filled by a tiny round: its queries (in LanceDB,
read-only), its pages headless (Streamlit's testing API) and in headless Chromium."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dashboards.question_filters import QuestionFilter, question_where
from dashboards.store import DashboardStore, StoreProblem
from storage.settings import Settings
from storage.tables import connect, read
from tests.conftest import SHIPPED_BASE

APP = str(Path(__file__).resolve().parent.parent / "dashboards" / "app.py")
TABLES = ("images", "questions", "answers", "votes", "specs", "generations", "scores", "filter_decisions", "qa_items")


@pytest.fixture(scope="module")
def filled_home(tmp_path_factory, prefect_server):
    """ASG_HOME with one tiny round (module-scoped: the round runs once)."""
    from flows.round import round_flow
    from tests.test_round_flow import _config

    home = tmp_path_factory.mktemp("dashboard-home")
    saved = {k: os.environ.get(k) for k in ("ASG_HOME", "ASG_LANCEDB_URI", "ASG_OBJECTS_URI", "MLFLOW_TRACKING_URI")}
    os.environ["ASG_HOME"] = str(home)
    for k in ("ASG_LANCEDB_URI", "ASG_OBJECTS_URI", "MLFLOW_TRACKING_URI"):
        os.environ.pop(k, None)
    round_flow(0, str(SHIPPED_BASE), _config().model_copy(update={"source": "world://unlabeled?n=30&seed=5",
                                                                  "n_images": 30}))
    yield home
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def store(filled_home, monkeypatch):
    monkeypatch.setenv("ASG_HOME", str(filled_home))
    return DashboardStore(Settings.from_env())


def _versions(home: Path) -> dict[str, int]:
    db = connect(Settings(home=home, lancedb_uri=str(home / "lancedb"), objects_uri="", mlflow_uri=""))
    return {t: db.open_table(t).version for t in TABLES}


@pytest.mark.parametrize("text", ["' OR 1=1 --", "left' OR 'a'='a", "%' OR question LIKE '%", "\\' OR true OR '"])
def test_filter_text_cannot_inject_sql_into_the_where_clause(store, filled_home, text):
    before = _versions(filled_home)
    total = store.count_questions(QuestionFilter(round_idx=0))
    assert total > 0
    assert store.count_questions(QuestionFilter(round_idx=0, text=text)) == 0
    assert store.count_questions(QuestionFilter(round_idx=0, buckets=(text,), families=(text,))) == 0
    assert len(store.question_page(QuestionFilter(round_idx=0, reasons=(text,)), 0)) == 0
    with pytest.raises(ValueError):
        store.count_questions(QuestionFilter(round_idx="0 OR 1=1"))
    with pytest.raises(StoreProblem, match="no question"):
        store.question_detail(text)
    assert _versions(filled_home) == before  # read-only, and nothing was deleted


def test_filters_run_in_lancedb_and_match_the_stored_rows(store, filled_home):
    before = _versions(filled_home)
    items = read(connect(Settings.from_env()), "qa_items")
    assert len(items) > 0 and set(items["family"]) <= {"color", "count", "exist", "relation", "shape", "other"}
    for f, expected in [
        (QuestionFilter(round_idx=0), items),
        (QuestionFilter(round_idx=0, buckets=("medium", "hard")), items[items["bucket"].isin(["medium", "hard"])]),
        (QuestionFilter(round_idx=0, kept=False), items[~items["kept"]]),
        (QuestionFilter(round_idx=0, majority_band=(0.5, 1.0)), items[items["majority_fraction"] >= 0.5]),
        (QuestionFilter(round_idx=0, ste_band=(0.0, 0.33)), items[items["ste_difficulty"] < 0.33]),
        (QuestionFilter(round_idx=0, text=items["question"].iloc[0]),
         items[items["question"].str.contains(items["question"].iloc[0], regex=False)]),
        (QuestionFilter(round_idx=7), items.iloc[0:0]),
    ]:
        assert store.count_questions(f) == len(expected), question_where(f)
    page0, page1 = store.question_page(QuestionFilter(round_idx=0), 0, 5), store.question_page(QuestionFilter(), 1, 5)
    assert len(page0) == 5 and not set(page0["question_id"]) & set(page1["question_id"])
    detail = store.question_detail(page0["question_id"].iloc[0])
    assert len(detail["answers"]) == 3 and detail["item"]["question"] == page0["question"].iloc[0]
    assert detail["vote"]["majority"] == detail["item"]["majority"]
    assert len(detail["candidates"]) == 2  # K candidates of that image
    # generations: every image of a page is returned with its scores and the filter's decision
    total, gens = store.generation_page(0, (0.0, 1.0), None, 0)
    scores = read(connect(Settings.from_env()), "scores")
    assert total == len(scores) and len(gens) > 0 and gens["png"].map(len).gt(0).all()
    kept_total, kept_rows = store.generation_page(0, (0.0, 1.0), True, 0)
    decisions = read(connect(Settings.from_env()), "filter_decisions")
    assert kept_total == int(decisions[(decisions["item_kind"] == "generation") & decisions["kept"]].shape[0])
    assert kept_rows.empty or kept_rows["kept"].all()
    summary = store.round_summary()
    assert summary.loc[0, "questions"] == len(items)
    assert summary.loc[0, [f"bucket_{b}" for b in ("easy", "medium", "hard", "unsolvable")]].sum() == len(items)
    assert _versions(filled_home) == before  # read-only


def test_missing_tables_and_old_schema_are_reported_not_raised(tmp_path):
    import lancedb
    import pyarrow as pa

    settings = Settings(home=tmp_path, lancedb_uri=str(tmp_path / "db"), objects_uri="", mlflow_uri="")
    empty = DashboardStore(settings)
    assert empty.is_empty() and empty.rounds() == []
    with pytest.raises(StoreProblem, match="table 'qa_items' is not in"):
        empty.count_questions(QuestionFilter())
    old = pa.schema([pa.field("question_id", pa.string()), pa.field("round_idx", pa.int64())],
                    metadata={"asg_schema_version": "1"})
    lancedb.connect(settings.lancedb_uri).create_table("qa_items", schema=old)
    with pytest.raises(StoreProblem, match="written by schema version 1; this dashboard reads version 2"):
        DashboardStore(settings).count_questions(QuestionFilter())


def _app(monkeypatch, home: Path, view: str, mlflow_uri: str | None = None):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("ASG_HOME", str(home))
    if mlflow_uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["view"] = view
    return at.run()


def test_pages_render_headless(filled_home, monkeypatch):
    at = _app(monkeypatch, filled_home, "questions")
    assert not at.exception
    total = len(read(connect(Settings.from_env()), "qa_items"))
    assert at.subheader[0].value == f"Questions of round 0: {total:,} match"
    shown = at.dataframe[0].value
    assert {"image", "question", "answers (framing: answer)", "vote", "STE", "kept"} <= set(shown.columns)
    assert shown["image"].str.startswith("data:image/png;base64,").all()
    easy = int((read(connect(Settings.from_env()), "qa_items")["bucket"] == "easy").sum())
    at.sidebar.multiselect[0].select("easy").run()  # the bucket filter
    assert at.subheader[0].value == f"Questions of round 0: {easy:,} match"
    if easy:
        assert set(at.dataframe[0].value["bucket"]) == {"easy"}

    at = _app(monkeypatch, filled_home, "generations")
    assert not at.exception and at.subheader[0].value.startswith("Generated images of round 0")
    assert any("checks:" in m.value for m in at.markdown)

    at = _app(monkeypatch, filled_home, "rounds")
    assert not at.exception and at.subheader[0].value == "Rounds"
    assert any("Bucket mix" in m.value for m in at.markdown) and any("runs" in m.value.lower() for m in at.markdown)
    assert any("Label-source audit of round" in m.value for m in at.markdown)
    audit = next(d.value for d in at.dataframe if "label_accuracy" in d.value.columns)
    assert {"kind", "source", "items", "greedy_accuracy", "gain"} <= set(audit.columns) and len(audit) > 0


def test_empty_database_and_missing_mlflow_show_messages(tmp_path, filled_home, monkeypatch):
    at = _app(monkeypatch, tmp_path / "nothing-here", "questions")
    assert not at.exception and "is empty" in at.info[0].value
    at = _app(monkeypatch, filled_home, "rounds", mlflow_uri="http://127.0.0.1:9")  # nothing listens there
    assert not at.exception and any("MLflow is not reachable" in w.value for w in at.warning)


@pytest.mark.integration
def test_browser_loads_every_view(filled_home, tmp_path):
    from playwright.sync_api import sync_playwright

    from tests.loopback_servers import VENV_BIN, free_port, start, stop, wait_for

    chromium = Path("/usr/bin/chromium")
    assert chromium.exists(), "browser tests need Debian's chromium: apt-get install -y chromium (see .ci/run)"
    port = free_port()
    log = tmp_path / "dashboard.log"
    proc = start([str(VENV_BIN / "asg"), "dashboard", "--port", str(port)], {"ASG_HOME": str(filled_home)}, log)
    items = read(connect(Settings.from_env()), "qa_items")
    question = items.sort_values("question_id")["question"].iloc[0]
    matches = int(items["question"].str.contains(question, regex=False).sum())
    prompt = read(connect(Settings.from_env()), "specs").query("valid")["prompt"].sort_values().iloc[0]
    try:
        wait_for(f"http://127.0.0.1:{port}/_stcore/health", proc, log)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/?view=questions")
            page.get_by_text("Questions of round 0").wait_for(timeout=60_000)
            page.get_by_label("question contains").fill(question)
            page.keyboard.press("Enter")
            page.get_by_text(f"Questions of round 0: {matches:,} match").wait_for(timeout=60_000)
            page.screenshot(path=str(tmp_path / "questions.png"))
            page.goto(f"http://127.0.0.1:{port}/?view=generations")
            page.get_by_text(prompt, exact=False).first.wait_for(timeout=60_000)
            page.locator("[data-testid='stImage'] img").first.wait_for(timeout=60_000)
            assert page.locator("[data-testid='stImage'] img").count() >= 2
            page.screenshot(path=str(tmp_path / "generations.png"))
            page.goto(f"http://127.0.0.1:{port}/?view=rounds")
            page.get_by_text("Bucket mix per round").wait_for(timeout=60_000)
            page.locator(".vega-embed").first.wait_for(timeout=60_000)
            page.screenshot(path=str(tmp_path / "rounds.png"))
            browser.close()
    finally:
        stop(proc)
        for view in ("questions", "generations", "rounds"):  # keep the screenshots for people to look at
            if (tmp_path / f"{view}.png").exists():
                (Path(os.environ.get("TMPDIR", "/tmp")) / f"dashboard-{view}.png").write_bytes(
                    (tmp_path / f"{view}.png").read_bytes())
    assert all((tmp_path / f"{v}.png").stat().st_size > 10_000 for v in ("questions", "generations", "rounds"))


def test_a_round_without_generations_shows_a_message(filled_home, tmp_path, monkeypatch):
    import shutil

    from storage.tables import upsert

    home = tmp_path / "copy"
    shutil.copytree(filled_home / "lancedb", home / "lancedb")
    settings = Settings(home=home, lancedb_uri=str(home / "lancedb"), objects_uri="", mlflow_uri="")
    db = connect(settings)
    row = read(db, "qa_items").iloc[0].to_dict()
    upsert(db, "qa_items", [{**row, "question_id": "r1:understanding-only", "round_idx": 1}])  # round 1: no images
    at = _app(monkeypatch, home, "generations")
    assert not at.exception
    assert "Round 1 has no generated images" in at.info[0].value
