"""Experiment report: a Markdown results table and PNG plots of metrics per round, from plain results."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from prefect import task

from tasks.logic.experiment_targets import ceiling_share, highest_ceiling, target_checks, targets_table

HEADLINE = ("vqa_accuracy", "geneval_overall", "vqa_relation", "geneval_color_attr", "caption_accuracy",
            "proposer_well_posed")
AUDIT_FIELDS = ("items", "label_accuracy", "greedy_accuracy")


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def results_table(results: list[dict], metric: str) -> str:
    """Rows: arms; columns: rounds (0 = the starting base); cells: mean ± spread over seeds."""
    arms = sorted({r["arm"] for r in results}, key=lambda a: (a != "control", a))
    rounds = sorted({r["round"] for r in results})
    lines = [f"| {metric} | " + " | ".join(f"round {k}" if k else "base" for k in rounds) + " |",
             "|---|" + "---|" * len(rounds)]
    for arm in arms:
        cells = []
        for k in rounds:
            values = [r["metrics"][metric] for r in results if r["arm"] == arm and r["round"] == k and metric in r["metrics"]]
            cells.append(_cell(values) if values else "")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def audit_table(results: list[dict], arm: str, round_idx: int) -> str:
    """The label-source audit of one arm's round (mean over seeds): per question kind and source, the items
    it yields, their label accuracy and the Solver's greedy accuracy on the same items (hidden scenes judge)."""
    rows = [r["diagnostics"] for r in results
            if r["arm"] == arm and r["round"] == round_idx and r.get("diagnostics")]
    cells: dict[tuple[str, str], dict[str, list[float]]] = {}
    for d in rows:
        for key, value in d.items():
            parts = key.split(".")
            if len(parts) == 4 and parts[0] == "audit" and parts[3] in AUDIT_FIELDS:
                cells.setdefault((parts[1], parts[2]), {}).setdefault(parts[3], []).append(value)
    lines = ["| kind | source | items | label accuracy | Solver greedy accuracy | label - Solver |",
             "|---|---|---|---|---|---|"]
    for (kind, source), fields in sorted(cells.items(), key=lambda kv: (kv[0][0] == "all", kv[0])):
        mean = {f: statistics.mean(fields[f]) for f in AUDIT_FIELDS if f in fields}
        lines.append(f"| {kind} | {source} | {mean['items']:.0f} | {mean['label_accuracy']:.3f} | "
                     f"{mean['greedy_accuracy']:.3f} | {mean['label_accuracy'] - mean['greedy_accuracy']:+.3f} |")
    return "\n".join(lines) if cells else ""


def ceiling_section(results: list[dict]) -> list[str]:
    """The share of the highest gold-label ceiling each label-free arm recovers, per headline metric (lines of
    Markdown; none when no ceiling arm ran)."""
    rows = []
    for metric in ("vqa_accuracy", "geneval_overall"):
        ceiling, value = highest_ceiling(results, metric)
        if ceiling is None:
            continue
        shares = ceiling_share(results, metric)
        if not shares:
            rows.append(f"| {metric} | {ceiling} ({value:.3f}) | no headroom: the ceiling does not beat the "
                        "matched control |")
        for arm, share in sorted(shares.items()):
            rows.append(f"| {metric} | {ceiling} ({value:.3f}) | {arm}: {100 * share:.0f}% |")
    if not rows:
        return []
    return ["", "## Share of the gold-label ceiling recovered (last round, mean over seeds)", "",
            "(arm - matched control) / (ceiling - matched control); the ceiling is the highest of the `*gold-ceiling` "
            "arms, which train on the world's true labels and are not methods.", "",
            "| metric | ceiling (value) | share recovered |", "|---|---|---|", *rows]


@task(name="write-experiment-report")
def write_experiment_report(results: list[dict], out_dir: str, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections = [f"# {title}", ""]
    for metric in HEADLINE:
        fig, ax = plt.subplots(figsize=(6, 4))
        for arm in sorted({r["arm"] for r in results}):
            rounds = sorted({r["round"] for r in results if r["arm"] == arm})
            values = [[r["metrics"][metric] for r in results if r["arm"] == arm and r["round"] == k] for k in rounds]
            means = [statistics.mean(v) for v in values]
            seeds = max(len(v) for v in values)
            line, = ax.plot(rounds, means, marker="o", label=arm if seeds == 1 else f"{arm} (mean of {seeds} seeds)")
            if seeds > 1:  # the seeds' range as a band
                ax.fill_between(rounds, [min(v) for v in values], [max(v) for v in values], color=line.get_color(),
                                alpha=0.2, linewidth=0)
        ax.set_xticks(sorted({r["round"] for r in results}))
        ax.set_xlabel("round (0 = base)")
        ax.set_ylabel(metric)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"{metric}.png", dpi=100)
        plt.close(fig)
        sections += [f"## {metric}", "", results_table(results, metric), "", f"![{metric}]({metric}.png)", ""]
    diag = [r for r in results if r.get("diagnostics")]
    if diag:
        sections += ["## Diagnostics of the last round of each arm (evaluation only)", "",
                     "| arm | seed | Solver training targets correct | majority acc. (kept items) | AUROC STE | "
                     "AUROC disagreement | reward precision | Generator training images correct | tile-read match precision |",
                     "|---|---|---|---|---|---|---|---|---|"]
        last = {}
        for r in diag:
            last[(r["arm"], r["seed"])] = r
        for (arm, seed), r in sorted(last.items()):
            d = r["diagnostics"]
            sections.append(f"| {arm} | {seed} | {d.get('solver_target_accuracy', float('nan')):.3f} | "
                            f"{d.get('pseudo_label_accuracy_kept', float('nan')):.3f} | "
                            f"{d.get('auroc_ste_error', float('nan')):.3f} | "
                            f"{d.get('auroc_disagreement_error', float('nan')):.3f} | "
                            f"{d.get('reward_precision', float('nan')):.3f} | "
                            f"{d.get('generator_target_accuracy', float('nan')):.3f} | "
                            f"{d.get('tile_match_precision', float('nan')):.3f} |")
    audited = sorted({r["arm"] for r in diag}, key=lambda a: (a != "agreement", a))
    if audited:
        table = audit_table(results, audited[0], 1)
        if table:
            sections += ["", f"## Label-source audit (arm {audited[0]}, round 1 rollouts, mean over seeds; "
                             "evaluation only)", "",
                         "Every source judged against the hidden scenes on the items it yields, beside the Solver's "
                         "own greedy answer on the same items: a source helps only where it beats the Solver.", "",
                         table]
    sections += ceiling_section(results)
    sections += ["", "## Against the targets (last round, mean over seeds; ablations on one seed)", "",
                 targets_table(target_checks(results)), ""]
    path = out / "report.md"
    path.write_text("\n".join(sections) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    return str(path)
