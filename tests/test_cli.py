"""The `asg` console script: help on every command, one-line errors that name the bad input."""

import subprocess
import sys

import pytest

COMMANDS = ("demo", "pretrain", "round", "evaluate", "experiment", "ingest")


def _asg(*args, env=None):
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_help_on_every_command():
    top = _asg("--help")
    assert top.returncode == 0 and all(c in top.stdout for c in COMMANDS)
    for command in COMMANDS:
        out = _asg(command, "--help")
        assert out.returncode == 0 and f"usage: asg {command}" in out.stdout


@pytest.mark.parametrize("args, needle", [
    (("evaluate", "--checkpoint", "no/such/ckpt"), "checkpoint not found: no/such/ckpt"),
    (("round", "--round-idx", "0", "--checkpoint", "missing-ckpt"), "checkpoint not found: missing-ckpt"),
    (("pretrain", "--backbone", "nope", "--out", "x"), "unknown backbone 'nope'"),
    (("ingest", "no-such-folder"), "image source not found: no-such-folder"),
])
def test_errors_are_one_line_and_name_the_input(args, needle, asg_home, monkeypatch):
    import os

    out = _asg(*args, env={**os.environ})
    assert out.returncode == 2
    lines = [line for line in out.stderr.strip().splitlines() if line.startswith("asg:")]
    assert len(lines) == 1 and needle in lines[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr
