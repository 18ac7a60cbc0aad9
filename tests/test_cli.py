"""The `asg` console script: help on every command, one-line errors that name the bad input."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SHIPPED_BASE

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


def _one_asg_line(out, needle: str) -> str:
    """The run failed with exit code 2 and exactly one `asg:` line, which contains `needle`; no traceback."""
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.strip().splitlines() if line.startswith("asg:")]
    assert len(lines) == 1 and needle in lines[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr + out.stdout
    return lines[0]


@pytest.fixture
def bad_inputs(tmp_path) -> Path:
    """A folder of broken inputs: checkpoints with a corrupt config.json, a truncated safetensors file or
    an unknown backbone; VQA files with a malformed line or a missing image."""
    for name in ("bad-config", "bad-weights", "bad-backbone"):
        shutil.copytree(SHIPPED_BASE, tmp_path / name)
    (tmp_path / "bad-config" / "config.json").write_text("{not json")
    weights = tmp_path / "bad-weights" / "base.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    (tmp_path / "bad-backbone" / "config.json").write_text('{"backbone": "nope"}')
    (tmp_path / "bad.jsonl").write_text('{"image": "a.png", "question": "q", "answer": "a"}\nnot json\n')
    (tmp_path / "no-image.jsonl").write_text('{"image": "a.png", "question": "q", "answer": "a"}\n')
    return tmp_path


@pytest.mark.parametrize("args, needle", [
    (("evaluate", "--checkpoint", "no/such/ckpt"), "checkpoint not found: no/such/ckpt"),
    (("round", "--round-idx", "0", "--checkpoint", "missing-ckpt"), "checkpoint not found: missing-ckpt"),
    (("demo", "--checkpoint", "missing-ckpt"), "checkpoint not found: missing-ckpt"),
    (("pretrain", "--backbone", "nope", "--out", "x"), "unknown backbone 'nope'"),
    (("pretrain", "--init-from", "missing-ckpt", "--out", "x"), "checkpoint not found: missing-ckpt"),
    (("pretrain", "--mix", "vqa=0.5,relate=0.5", "--out", "x"), "--mix group 'relate' is not one of"),
    (("pretrain", "--relation-reading", "--mix", "vqa=-1", "--out", "x"), "--mix share of 'vqa' must be a positive"),
    (("ingest", "no-such-folder"), "image source not found: no-such-folder"),
    (("round", "--round-idx", "0", "--checkpoint", "{d}/bad-weights", "--source", "no-such-folder"),
     "image source not found: no-such-folder"),
    (("evaluate", "--checkpoint", "{d}/bad-config"), "checkpoint {d}/bad-config is unreadable: config.json"),
    (("round", "--round-idx", "0", "--checkpoint", "{d}/bad-weights"),
     "checkpoint {d}/bad-weights is unreadable: base.safetensors is truncated"),
    (("experiment", "--checkpoint", "{d}/bad-backbone"), "checkpoint {d}/bad-backbone: unknown backbone 'nope'"),
    (("evaluate", "--vqa-file", "{d}/missing.jsonl"), "benchmark file not found: {d}/missing.jsonl"),
    (("evaluate", "--vqa-file", "{d}/bad.jsonl"), "{d}/bad.jsonl, line 2: not JSON"),
    (("evaluate", "--vqa-file", "{d}/no-image.jsonl"), "{d}/no-image.jsonl, item 1: image not found: {d}/a.png"),
    (("evaluate", "--geneval-metadata", "{d}/missing.jsonl", "--geneval-out", "{d}/out"),
     "benchmark file not found: {d}/missing.jsonl"),
    (("nightly", "--preset", "nope"), "unknown nightly preset 'nope'"),
    (("demo", "--preset", "verified", "--generator-update", "preference"),
     "generator_update 'preference' needs tile verdicts, which only the compose preset makes (preset 'verified')"),
    (("result-storage", "bucket"), "result storage must be a URL"),
])
def test_errors_are_one_line_and_name_the_input(args, needle, asg_home, bad_inputs):
    out = _asg(*(a.format(d=bad_inputs) for a in args), env={**os.environ})
    _one_asg_line(out, needle.format(d=bad_inputs))


def test_unknown_choice_is_a_usage_error():
    out = _asg("round", "--round-idx", "0", "--checkpoint", "x", "--preset", "nope")
    assert out.returncode == 2 and "invalid choice: 'nope'" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("how", [("--debug",), ()])
def test_debug_shows_the_traceback(how, asg_home, tmp_path):
    env = {**os.environ, **({} if how else {"ASG_DEBUG": "1"})}
    out = _asg(*how, "evaluate", "--vqa-file", str(tmp_path / "missing.jsonl"), env=env)
    assert out.returncode != 0 and "Traceback" in out.stderr
    assert f"FileNotFoundError: benchmark file not found: {tmp_path / 'missing.jsonl'}" in out.stderr


# --- servers: checked before any compute, at most ~10 s, one line naming the URL

SERVER_VARIABLES = {"mlflow": ("MLFLOW_TRACKING_URI", "http://127.0.0.1:{port}", "MLflow tracking server"),
                    "prefect": ("PREFECT_API_URL", "http://127.0.0.1:{port}/api", "Prefect API"),
                    "s3": ("ASG_S3_ENDPOINT_URL", "http://127.0.0.1:{port}", "S3 endpoint")}
SERVER_COMMANDS = {"round": ("round", "--round-idx", "1", "--checkpoint", str(SHIPPED_BASE)), "demo": ("demo",),
                   "evaluate": ("evaluate",), "experiment": ("experiment", "--quick"), "nightly": ("nightly",),
                   "serve": ("serve",)}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env(kind: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI",
                                                            "ASG_S3_ENDPOINT_URL")}
    variable, url, _ = SERVER_VARIABLES[kind]
    return {**env, variable: url.format(port=port)}


@pytest.mark.parametrize("command", sorted(SERVER_COMMANDS))
@pytest.mark.parametrize("kind", sorted(SERVER_VARIABLES))
def test_closed_server_port_is_one_line(kind, command, asg_home):
    port = _closed_port()
    started = time.monotonic()
    out = _asg(*SERVER_COMMANDS[command], env=_server_env(kind, port))
    elapsed = time.monotonic() - started
    variable, url, name = SERVER_VARIABLES[kind]
    line = _one_asg_line(out, f"{name} {url.format(port=port)} is not reachable (connection refused)")
    assert variable in line
    assert elapsed < 10, elapsed


def test_silent_servers_time_out_within_ten_seconds(asg_home):
    with socket.socket() as listener:  # accepts connections (the kernel's backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        env = {**_server_env("mlflow", port), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
               "ASG_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
        started = time.monotonic()
        out = _asg("round", "--round-idx", "1", "--checkpoint", str(SHIPPED_BASE), env=env)
        elapsed = time.monotonic() - started
    _one_asg_line(out, f"MLflow tracking server http://127.0.0.1:{port} is not reachable (no answer within")
    assert elapsed < 10, elapsed
