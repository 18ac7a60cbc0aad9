"""The asg dashboard: look at what the flywheel asked, answered, drew and kept, round by round.

    asg dashboard                     # http://127.0.0.1:8501 over $ASG_LANCEDB_URI and $MLFLOW_TRACKING_URI
    asg dashboard --port 8600

Read-only: it never writes to LanceDB or MLflow. Views: Questions, Generations, Rounds
(open one directly with ?view=generations).
"""

from __future__ import annotations

import io
import json

import altair as alt
import pandas as pd
import streamlit as st

from dashboards.question_filters import STE_BANDS, QuestionFilter
from dashboards.round_history import TrackingUnavailable, round_runs
from dashboards.store import DashboardStore, StoreProblem, png_data_url
from storage.settings import Settings, redacted

VIEWS = ("questions", "generations", "rounds")
PAGE_SIZE = 25


@st.cache_resource
def _store(uri: str) -> DashboardStore:  # one connection per database URI
    return DashboardStore(Settings.from_env())


def _round_picker(store: DashboardStore) -> int:
    rounds = store.rounds()
    if not rounds:
        raise StoreProblem("no rounds stored yet: run `asg demo` or `asg round` first")
    return st.sidebar.selectbox("round", rounds, index=len(rounds) - 1)


def _round_links(tracking_uri: str, round_idx: int) -> None:
    """Links to the round's MLflow run(s) and Prefect flow run(s), when MLflow is reachable."""
    try:
        runs = round_runs(tracking_uri)
    except TrackingUnavailable:
        st.caption("MLflow is not reachable: no run links")
        return
    if runs.empty or round_idx not in set(runs["round_idx"]):
        return
    for run in runs[runs["round_idx"] == round_idx].to_dict("records"):
        links = [f"[MLflow run]({run['mlflow_link']})" if run["mlflow_link"].startswith("http")
                 else run["mlflow_link"]]
        if run["prefect_link"]:
            links.append(f"[Prefect flow run]({run['prefect_link']})")
        st.caption(f"{run['experiment']} · " + " · ".join(links))


def questions_view(store: DashboardStore, tracking_uri: str) -> None:
    round_idx = _round_picker(store)
    side = st.sidebar
    buckets = side.multiselect("bucket", ["easy", "medium", "hard", "unsolvable"])
    families = side.multiselect("question family", store.distinct("family", round_idx))
    band = side.selectbox("STE band", ["any", *STE_BANDS])
    majority = side.slider("majority fraction m", 0.0, 1.0, (0.0, 1.0), 0.05)
    kept_choice = side.radio("decision", ["any", "kept", "dropped"], horizontal=True)
    reasons = side.multiselect("reason", store.distinct("reason", round_idx))
    text = side.text_input("question contains")
    f = QuestionFilter(round_idx=round_idx, buckets=tuple(buckets), families=tuple(families), reasons=tuple(reasons),
                       ste_band=STE_BANDS.get(band, (0.0, 1.01)), majority_band=tuple(majority),
                       kept={"any": None, "kept": True, "dropped": False}[kept_choice], text=text)
    total = store.count_questions(f)
    pages = max(1, -(-total // PAGE_SIZE))
    st.subheader(f"Questions of round {round_idx}: {total:,} match")
    _round_links(tracking_uri, round_idx)
    page = st.number_input(f"page (of {pages})", 1, pages, 1) - 1
    rows = store.question_page(f, page, PAGE_SIZE)
    if rows.empty:
        st.info("No question matches these filters.")
        return
    pngs = store.images(rows["image_id"].tolist())
    answers = [json.loads(a) for a in rows["answers_json"]]
    table = pd.DataFrame({
        "image": [png_data_url(pngs.get(i, b"")) for i in rows["image_id"]],
        "question": rows["question"], "family": rows["family"],
        "answers (framing: answer)": ["; ".join(f"{a['framing']}: {a['text']}" for a in ans) for ans in answers],
        "vote": rows["majority"], "m": rows["majority_fraction"], "H_SC": rows["answer_entropy"],
        "STE": rows["ste_raw"], "d_STE": rows["ste_difficulty"], "bucket": rows["bucket"],
        "R_P": rows["proposer_reward"], "mean r_i": rows["mean_solver_reward"], "kept": rows["kept"],
        "reason": rows["reason"]})
    event = st.dataframe(table, hide_index=True, on_select="rerun", selection_mode="single-row",
                         column_config={"image": st.column_config.ImageColumn("image", width="small"),
                                        "m": st.column_config.NumberColumn(format="%.2f"),
                                        "H_SC": st.column_config.NumberColumn(format="%.2f"),
                                        "STE": st.column_config.NumberColumn(format="%.2f"),
                                        "d_STE": st.column_config.NumberColumn(format="%.2f"),
                                        "R_P": st.column_config.NumberColumn(format="%.2f"),
                                        "mean r_i": st.column_config.NumberColumn(format="%.2f")},
                         width="stretch")
    selected = event.selection.rows if event and event.selection else []
    if selected:
        detail = store.question_detail(rows.iloc[selected[0]]["question_id"])
        left, right = st.columns([1, 3])
        left.image(pngs.get(detail["item"]["image_id"], b""), width=192, caption=detail["item"]["image_id"][:12])
        right.markdown(f"**{detail['item']['question']}** → vote **{detail['item']['majority']}** "
                       f"({detail['item']['reason']})")
        right.dataframe(pd.DataFrame(detail["answers"]), hide_index=True)
        with right.expander("every stored signal"):
            st.json(detail)
    _export(store, f)


def _export(store: DashboardStore, f: QuestionFilter) -> None:
    st.divider()
    if st.button("prepare export of the filtered rows"):
        frame = store.filtered_questions(f)
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        st.download_button("download Parquet", buffer.getvalue(), file_name=f"qa_items_round{f.round_idx}.parquet")
        st.download_button("download CSV", frame.to_csv(index=False).encode(),
                           file_name=f"qa_items_round{f.round_idx}.csv")


def generations_view(store: DashboardStore) -> None:
    round_idx = _round_picker(store)
    reward = st.sidebar.slider("R_g", 0.0, 1.0, (0.0, 1.0), 0.05)
    kept_choice = st.sidebar.radio("decision", ["any", "kept", "dropped"], horizontal=True)
    kept = {"any": None, "kept": True, "dropped": False}[kept_choice]
    first = store.generation_page(round_idx, reward, kept, 0, 1)[0]
    if first == 0:
        st.info(f"Round {round_idx} has no generated images matching these filters "
                "(a round in understanding-only mode generates none).")
        return
    page = st.number_input("page of specs", 1, 10_000, 1) - 1
    total, rows = store.generation_page(round_idx, reward, kept, page)
    st.subheader(f"Generated images of round {round_idx}: {total:,} match")
    for spec_id, group in rows.groupby("spec_id", sort=True):
        head = group.iloc[0]
        st.markdown(f"**{head['prompt']}**  \nchecks: " + "; ".join(f"{q} → {a}" for q, a in head["checks"]))
        columns = st.columns(max(3, len(group)))
        for column, row in zip(columns, group.to_dict("records")):
            column.image(row["png"], width=128)
            column.caption(f"R_g {row['reward']:.2f} · S_fid {row['fidelity']:.2f} · S_cyc {row['cycle']:.2f} · "
                           f"S_div {row['diversity']:.2f} · C {row['contradiction']:.2f}  \n"
                           f"{'kept' if row['kept'] else 'dropped'} ({row['reason']})  \ncaption: {row['caption']}")
            with column.expander("Solver's answers"):
                st.json(json.loads(row["check_answers_json"]))
        st.divider()


def rounds_view(store: DashboardStore, tracking_uri: str) -> None:
    summary = store.round_summary()
    st.subheader("Rounds")
    if summary.empty:
        st.info("No rounds stored yet.")
    else:
        mix = summary.melt("round_idx", [c for c in summary if c.startswith("bucket_")], "bucket", "count")
        st.markdown("**Bucket mix per round**")
        st.altair_chart(alt.Chart(mix).mark_bar().encode(x="round_idx:O", y="count:Q", color="bucket:N"),
                        width="stretch")
        st.dataframe(summary, hide_index=True)
        ste = pd.concat([pd.DataFrame({"round_idx": r, "STE": store.ste_values(r)}) for r in summary["round_idx"]])
        st.markdown("**STE distribution per round**")
        st.altair_chart(alt.Chart(ste).mark_boxplot().encode(x="round_idx:O", y="STE:Q"), width="stretch")
    evaluations = store.evaluations()
    if not evaluations.empty:
        rounds = evaluations[evaluations["suite"] != "diagnostics"]
        series = [c for c in ("vqa_accuracy", "geneval_overall", "caption_accuracy", "proposer_well_posed")
                  if c in rounds]
        if series:
            st.markdown("**Held-out evaluation per round** (round -1 is the base)")
            long = rounds.melt("round_idx", series, "metric", "value").dropna()
            st.altair_chart(alt.Chart(long).mark_line(point=True).encode(x="round_idx:O", y="value:Q",
                                                                         color="metric:N"),
                            width="stretch")
        diag = evaluations[evaluations["suite"] == "diagnostics"]
        signals = [c for c in ("pseudo_label_accuracy", "pseudo_label_accuracy_kept", "reward_precision",
                               "auroc_ste_error", "auroc_disagreement_error", "distinct_question_share",
                               "mean_agreement") if c in diag]
        if signals:
            st.markdown("**Label quality and collapse signals** (judged with the world's hidden labels)")
            long = diag.melt("round_idx", signals, "signal", "value").dropna()
            st.altair_chart(alt.Chart(long).mark_line(point=True).encode(x="round_idx:O", y="value:Q",
                                                                         color="signal:N"),
                            width="stretch")
    audit = store.label_audit()
    if not audit.empty:
        latest = int(audit["round_idx"].max())
        st.markdown(f"**Label-source audit of round {latest}** (judged with the world's hidden labels, evaluation "
                    "only): a source helps only where its labels beat the Solver's own greedy answers on the same "
                    "items (`gain` > 0)")
        st.dataframe(audit[audit["round_idx"] == latest].drop(columns=["round_idx"]), hide_index=True)
    try:
        runs = round_runs(tracking_uri)
    except TrackingUnavailable as exc:
        st.warning(f"MLflow is not reachable, so promotion decisions and run links are missing: {exc}")
        return
    if runs.empty:
        st.info("No round runs in MLflow yet.")
        return
    st.markdown("**Runs, promotion decisions and links**")
    columns = ["experiment", "round_idx", "status", "tags.promotion.decision", "tags.promotion.reason",
               "metrics.promotion.candidate_score", "metrics.promotion.champion_score", "mlflow_link", "prefect_link"]
    st.dataframe(runs[[c for c in columns if c in runs]], hide_index=True,
                 column_config={"mlflow_link": st.column_config.LinkColumn("MLflow run"),
                                "prefect_link": st.column_config.LinkColumn("Prefect flow run")})


def main() -> None:
    st.set_page_config(page_title="asg dashboard", layout="wide")
    settings = Settings.from_env()
    st.sidebar.title("asg")
    st.sidebar.caption(f"LanceDB: {redacted(settings.lancedb_uri)}  \nMLflow: {redacted(settings.mlflow_uri)}")
    requested = st.query_params.get("view", "questions")
    view = st.sidebar.radio("view", VIEWS, index=VIEWS.index(requested) if requested in VIEWS else 0,
                            format_func=str.capitalize)
    st.query_params["view"] = view
    try:
        store = _store(settings.lancedb_uri)
        if store.is_empty():
            st.info(f"The database at {redacted(settings.lancedb_uri)} is empty: run `asg demo` or a nightly round first.")
            return
        if view == "questions":
            questions_view(store, settings.mlflow_uri)
        elif view == "generations":
            generations_view(store)
        else:
            rounds_view(store, settings.mlflow_uri)
    except StoreProblem as exc:
        st.warning(str(exc))


main()
