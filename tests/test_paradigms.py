"""One recipe, three generation paradigms: the same tiny round (same flow, tasks and reward code)
over the autoregressive, diffusion and rectified-flow versions of the embedded model produces the
same tables and the same metrics; only the backbone differs."""

from __future__ import annotations

import pytest

from flows.round import round_flow
from models.registry import create_backbone, load_backbone
from storage.settings import Settings
from storage.tables import connect, read, table_names
from tests.conftest import SHIPPED_BASE
from tests.test_round_flow import _config

PARADIGMS = {"shapes": "autoregressive", "shapes-diffusion": "diffusion", "shapes-flow": "rectified flow"}


@pytest.mark.usefixtures("prefect_server")
def test_the_same_round_runs_unchanged_over_all_three_paradigms(asg_home, tmp_path, monkeypatch):
    produced = {}
    for name in PARADIGMS:
        home = tmp_path / name
        monkeypatch.setenv("ASG_HOME", str(home))
        # The shipped trunk (so the Proposer writes valid specs), each paradigm's own generator.
        if name == "shapes":
            base = str(SHIPPED_BASE)
        else:
            backbone = create_backbone(name, seed=0, denoiser_layers=1, inference_steps=4)
            backbone.init_understanding_from(SHIPPED_BASE)
            backbone.save(tmp_path / f"{name}-base")
            base = str(tmp_path / f"{name}-base")
        result = round_flow(0, base, _config())
        db = connect(Settings.from_env())
        tables = {t: len(read(db, t)) for t in table_names(db)}
        produced[name] = (set(tables), {t for t, n in tables.items() if n > 0},
                          # the audit's (kind, source) cells depend on which items a round happens to yield
                          {k for k in result if k != "checkpoint" and not k.startswith("diagnose.audit.")})
        assert tables["generations"] > 0 and tables["scores"] == tables["generations"]
        after = load_backbone(home / "objects" / "checkpoints" / "round-0")
        assert after.name == name
        # the Generator's update moved this paradigm's generator adapter
        assert result["finetune.generator_examples"] >= 0
    reference = produced["shapes"]
    for name, got in produced.items():
        assert got == reference, f"{name} ({PARADIGMS[name]}) differs from the autoregressive round"
