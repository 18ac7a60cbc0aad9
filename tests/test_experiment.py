"""`asg experiment --quick`: every arm runs and the report has its tables and plots (not gains)."""

import pytest

from flows.cli import PRESET_ARM_NAMES
from flows.experiment import ABLATIONS, PRESET_ARMS, experiment_flow
from tests.conftest import SHIPPED_BASE


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_quick_experiment_writes_report_with_every_arm(asg_home):
    report = experiment_flow(str(SHIPPED_BASE), rounds=1, seeds=(0,), ablations=True, quick=True)
    text = open(report).read()
    for arm in ["control", *PRESET_ARMS, *ABLATIONS]:
        assert f"| {arm} |" in text
    assert "| vqa_accuracy | base | round 1 |" in text
    for metric in ("vqa_accuracy", "geneval_overall"):
        assert (asg_home / "experiment" / f"{metric}.png").stat().st_size > 1000
    assert "Solver training targets correct" in text and "Label-source audit" in text
    assert "share of the gold-label ceiling recovered" in text or "gold-ceiling" in text


def test_the_cli_offers_exactly_the_experiments_arms():
    assert PRESET_ARM_NAMES == PRESET_ARMS
