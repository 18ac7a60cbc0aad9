"""Experiment report: a Markdown results table and PNG plots of metrics per round, from plain results."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from prefect import task

from tasks.logic.experiment_targets import target_checks, targets_table

HEADLINE = ("vqa_accuracy", "geneval_overall", "caption_accuracy", "proposer_well_posed")


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
            means = [statistics.mean([r["metrics"][metric] for r in results
                                      if r["arm"] == arm and r["round"] == k]) for k in rounds]
            ax.plot(rounds, means, marker="o", label=arm)
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
                     "| arm | seed | pseudo-label acc. (trained items) | AUROC STE | AUROC disagreement | reward precision |",
                     "|---|---|---|---|---|---|"]
        last = {}
        for r in diag:
            last[(r["arm"], r["seed"])] = r
        for (arm, seed), r in sorted(last.items()):
            d = r["diagnostics"]
            sections.append(f"| {arm} | {seed} | {d.get('pseudo_label_accuracy_kept', float('nan')):.3f} | "
                            f"{d.get('auroc_ste_error', float('nan')):.3f} | "
                            f"{d.get('auroc_disagreement_error', float('nan')):.3f} | "
                            f"{d.get('reward_precision', float('nan')):.3f} |")
    sections += ["", "## Against the targets (last round, mean over seeds; ablations on one seed)", "",
                 targets_table(target_checks(results)), ""]
    path = out / "report.md"
    path.write_text("\n".join(sections) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    return str(path)
