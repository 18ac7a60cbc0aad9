"""The demo end to end through the real CLI, at a small size (slow: a few minutes on 2 cores)."""

import os
import subprocess
import sys

import pytest

from storage.settings import Settings
from storage.tables import connect, count


@pytest.mark.slow
def test_asg_demo_quick_prints_before_after_and_fills_tables(asg_home):
    out = subprocess.run([sys.executable, "-m", "flows.cli", "demo", "--images", "60", "--quick"],
                         capture_output=True, text=True, timeout=1200, env={**os.environ})
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert "vqa_accuracy" in text and "geneval_overall" in text and "round 0" in text
    db = connect(Settings.from_env())
    assert count(db, "images") == 60
    assert count(db, "questions") == 180
    assert count(db, "training_examples") > 0
    assert (asg_home / "objects" / "checkpoints" / "round-0" / "config.json").is_file()
