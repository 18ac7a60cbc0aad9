"""Read-only access to asg's LanceDB for the dashboard: filtered pages, images, details, round summaries.

Every filter runs inside LanceDB (a SQL `where`, `limit`/`offset` paging, `count_rows`); only the
page being shown is loaded. Nothing here writes. Problems the page should show instead of a stack
trace (no database, a missing table, a table from another schema version) are `StoreProblem`s.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pandas as pd

from dashboards.question_filters import QuestionFilter, question_where, quote
from storage.schemas import SCHEMA_VERSION, SCHEMAS
from storage.settings import Settings, redacted
from storage.tables import existing

QUESTION_COLUMNS = ["question_id", "round_idx", "image_id", "question", "family", "majority", "majority_fraction",
                    "answer_entropy", "ste_raw", "ste_difficulty", "bucket", "proposer_reward", "mean_solver_reward",
                    "kept", "reason", "answers_json"]


class StoreProblem(Exception):
    """A condition the dashboard reports in the page (not a crash)."""


class DashboardStore:
    def __init__(self, settings: Settings):
        import lancedb

        self.settings = settings
        try:
            # read_consistency_interval=0: see rows that a running round wrote after we connected
            self.db = lancedb.connect(settings.lancedb_uri, storage_options=settings.lancedb_options(),
                                      read_consistency_interval=timedelta(0))
            # a table whose creation a kill interrupted is listed but holds nothing: left out
            self.tables = {name for name in self.db.list_tables().tables if existing(self.db, name) is not None}
        except Exception as exc:  # unreachable S3, bad path
            raise StoreProblem(f"cannot open LanceDB at {redacted(settings.lancedb_uri)}: {exc}") from exc

    def _table(self, name: str):
        if name not in self.tables:
            raise StoreProblem(f"table {name!r} is not in {redacted(self.settings.lancedb_uri)} yet: run a round first "
                               f"(`asg demo` or `asg round`)")
        table = self.db.open_table(name)
        metadata = table.schema.metadata or {}
        version = metadata.get(b"asg_schema_version", b"?").decode()
        if version != str(SCHEMA_VERSION) or not set(SCHEMAS[name].names) <= set(table.schema.names):
            raise StoreProblem(f"table {name!r} was written by schema version {version}; this dashboard reads "
                               f"version {SCHEMA_VERSION}. Point ASG_LANCEDB_URI at a database written by this "
                               "version of asg, or re-run its rounds.")
        return table

    def is_empty(self) -> bool:
        return not ({"qa_items", "specs", "evaluations"} & self.tables)

    # --- questions

    def rounds(self) -> list[int]:
        found: set[int] = set()
        for name in ("qa_items", "specs"):
            if name in self.tables:
                frame = self._table(name).search().select(["round_idx"]).limit(None).to_pandas()
                found |= set(frame["round_idx"].astype(int).unique().tolist())
        return sorted(found)

    def distinct(self, column: str, round_idx: int) -> list[str]:
        frame = self._table("qa_items").search().where(f"round_idx = {int(round_idx)}").select([column]) \
            .limit(None).to_pandas()
        return sorted(frame[column].astype(str).unique().tolist())

    def count_questions(self, f: QuestionFilter) -> int:
        return self._table("qa_items").count_rows(question_where(f))

    def question_page(self, f: QuestionFilter, page: int, page_size: int = 25) -> pd.DataFrame:
        query = self._table("qa_items").search().where(question_where(f)).select(QUESTION_COLUMNS)
        return query.offset(max(0, page) * page_size).limit(page_size).to_pandas()

    def filtered_questions(self, f: QuestionFilter, limit: int = 200_000) -> pd.DataFrame:
        """The rows an export writes (at most `limit`)."""
        return self._table("qa_items").search().where(question_where(f)).select(QUESTION_COLUMNS) \
            .limit(limit).to_pandas()

    def question_detail(self, question_id: str) -> dict:
        """Every stored signal of one question: its row, its candidates, its N answers, its decision."""
        key = quote(question_id)
        item = self._table("qa_items").search().where(f"question_id = {key}").limit(1).to_pandas()
        if item.empty:
            raise StoreProblem(f"no question {question_id!r}")
        row = item.iloc[0].to_dict()
        candidates = self._table("questions").search().where(
            f"image_id = {quote(row['image_id'])} AND round_idx = {int(row['round_idx'])}").limit(None).to_pandas()
        answers = self._table("answers").search().where(f"question_id = {key}").limit(None).to_pandas()
        vote = self._table("votes").search().where(f"question_id = {key}").limit(1).to_pandas()
        return {"item": _plain(row), "vote": _plain(vote.iloc[0].to_dict()) if len(vote) else {},
                "candidates": candidates.drop(columns=[c for c in candidates if c == "png"]).to_dict("records"),
                "answers": answers.drop(columns=["token_entropies"], errors="ignore").to_dict("records")}

    def images(self, image_ids: list[str]) -> dict[str, bytes]:
        return self._pngs("images", "image_id", image_ids)

    def _pngs(self, table: str, key: str, ids: list[str]) -> dict[str, bytes]:
        if not ids:
            return {}
        frame = self._table(table).search().where(f"{key} IN ({', '.join(quote(i) for i in sorted(set(ids)))})") \
            .select([key, "png"]).limit(None).to_pandas()
        return dict(zip(frame[key], frame["png"]))

    # --- generations

    def generation_page(self, round_idx: int, reward_band: tuple[float, float], kept: bool | None, page: int,
                        page_size: int = 10) -> tuple[int, pd.DataFrame]:
        """(number of matching images, one page of specs with their L images, scores and decisions)."""
        if "scores" not in self.tables:
            raise StoreProblem("no generations stored yet: run a round with generation on (mode joint or "
                               "generation)")
        where = (f"round_idx = {int(round_idx)} AND reward >= {float(reward_band[0])} AND "
                 f"reward <= {float(reward_band[1])}")
        if kept is not None:
            decided = self._table("filter_decisions").search().where(
                f"round_idx = {int(round_idx)} AND item_kind = 'generation' AND kept = {str(kept).lower()}") \
                .select(["item_id"]).limit(None).to_pandas()
            if decided.empty:
                return 0, pd.DataFrame()
            where += f" AND generation_id IN ({', '.join(quote(i) for i in decided['item_id'])})"
        scores = self._table("scores")
        total = scores.count_rows(where)
        if total == 0:
            return 0, pd.DataFrame()
        matching = scores.search().where(where).select(["spec_id"]).limit(None).to_pandas()
        spec_ids = sorted(matching["spec_id"].unique())[page * page_size:(page + 1) * page_size]
        in_specs = f"spec_id IN ({', '.join(quote(s) for s in spec_ids)})"
        page_scores = scores.search().where(f"{where} AND {in_specs}").limit(None).to_pandas()
        specs = self._table("specs").search().where(in_specs).limit(None).to_pandas().set_index("spec_id")
        decisions = self._table("filter_decisions").search().where(
            f"item_id IN ({', '.join(quote(g) for g in page_scores['generation_id'])})").limit(None).to_pandas()
        verdict = dict(zip(decisions["item_id"], zip(decisions["kept"], decisions["reason"])))
        pngs = self._pngs("generations", "generation_id", page_scores["generation_id"].tolist())
        page_scores["prompt"] = [specs.loc[s, "prompt"] for s in page_scores["spec_id"]]
        page_scores["checks"] = [json.loads(specs.loc[s, "checks_json"]) for s in page_scores["spec_id"]]
        page_scores["kept"] = [verdict.get(g, (False, ""))[0] for g in page_scores["generation_id"]]
        page_scores["reason"] = [verdict.get(g, (False, "not-decided"))[1] for g in page_scores["generation_id"]]
        page_scores["png"] = [pngs.get(g, b"") for g in page_scores["generation_id"]]
        return total, page_scores.sort_values(["spec_id", "generation_id"]).reset_index(drop=True)

    # --- rounds

    def round_summary(self) -> pd.DataFrame:
        """Per round: bucket mix, kept counts, mean STE/agreement (counted in LanceDB)."""
        rows = []
        table = self._table("qa_items") if "qa_items" in self.tables else None
        for r in self.rounds():
            row: dict = {"round_idx": r}
            if table is not None:
                row["questions"] = table.count_rows(f"round_idx = {r}")
                row["kept_questions"] = table.count_rows(f"round_idx = {r} AND kept = true")
                for bucket in ("easy", "medium", "hard", "unsolvable"):
                    row[f"bucket_{bucket}"] = table.count_rows(f"round_idx = {r} AND bucket = '{bucket}'")
            if "filter_decisions" in self.tables:
                row["kept_generations"] = self._table("filter_decisions").count_rows(
                    f"round_idx = {r} AND item_kind = 'generation' AND kept = true")
            rows.append(row)
        return pd.DataFrame(rows)

    def ste_values(self, round_idx: int) -> pd.Series:
        frame = self._table("qa_items").search().where(f"round_idx = {int(round_idx)}").select(["ste_raw"]) \
            .limit(None).to_pandas()
        return frame["ste_raw"]

    def evaluations(self) -> pd.DataFrame:
        """Stored evaluation and diagnostics metrics, one row per (checkpoint, suite)."""
        if "evaluations" not in self.tables:
            return pd.DataFrame()
        frame = self._table("evaluations").search().limit(None).to_pandas()
        frame = frame[frame["suite"] != AUDIT_SUITE].reset_index(drop=True)
        metrics = pd.DataFrame([json.loads(m) for m in frame["metrics_json"]])
        return pd.concat([frame.drop(columns=["metrics_json"]).reset_index(drop=True), metrics], axis=1)

    def label_audit(self) -> pd.DataFrame:
        """Each round's label-source audit: per question kind and source, items, label and Solver accuracy."""
        if "evaluations" not in self.tables:
            return pd.DataFrame()
        frame = self._table("evaluations").search().where(f"suite = '{AUDIT_SUITE}'").limit(None).to_pandas()
        rows = [{"round_idx": r, **row} for r, m in zip(frame["round_idx"], frame["metrics_json"])
                for row in json.loads(m)]
        return pd.DataFrame(rows)


AUDIT_SUITE = "label-audit"  # written by the diagnose stage: a list of rows, not one metrics dict


def png_data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode() if png else ""


def _plain(row: dict) -> dict:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items() if k != "png"}
