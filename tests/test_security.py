"""Security checks: loopback-only servers, no credentials in stored parameters or messages, no pickle weights,
no remote code."""

import ast
import re
import shutil
from pathlib import Path

import pytest

from flows.cli import main
from flows.round import RoundConfig
from models.registry import load_backbone
from storage.settings import redacted
from tests.conftest import SHIPPED_BASE

ROOT = Path(__file__).resolve().parent.parent
CODE = [p for package in ("flows", "tasks", "models", "storage", "dashboards", "world", "text", "benchmarks", "infra")
        for p in (ROOT / package).rglob("*.py")]


def test_no_server_the_project_starts_listens_beyond_loopback():
    wildcard = re.compile(r"""["'](0\.0\.0\.0|::)["']""")
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in CODE + list((ROOT / "tests").rglob("*.py"))
                 for n, line in enumerate(p.read_text().splitlines(), 1) if wildcard.search(line)]
    assert not offenders, offenders


def test_the_dashboard_binds_127_0_0_1(monkeypatch):
    import subprocess

    calls = []
    monkeypatch.setattr(subprocess, "call", lambda args: calls.append(args) or 0)
    with pytest.raises(SystemExit):
        main(["dashboard", "--port", "8599"])
    args = calls[0]
    assert args[args.index("--server.address") + 1] == "127.0.0.1"


def test_every_from_pretrained_call_keeps_remote_code_off():
    loads = []
    for path in CODE:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "from_pretrained" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id.startswith("Auto"):
                kwargs = {k.arg: k.value for k in node.keywords}
                loads.append(f"{path.name}:{node.lineno}")
                value = kwargs.get("trust_remote_code")
                assert value is None or (isinstance(value, ast.Constant) and value.value is False), \
                    f"{path.name}:{node.lineno} may trust remote code"
                assert isinstance(kwargs.get("local_files_only"), ast.Constant) \
                    and kwargs["local_files_only"].value is True, f"{path.name}:{node.lineno} may download"
    assert len(loads) >= 3  # the Janus and composite adapters' transformers loads were found


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "weights.pkl"])
def test_a_checkpoint_of_pickle_weights_is_refused_with_one_line(tmp_path, name, capsys):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    shutil.copy(SHIPPED_BASE / "config.json", folder / "config.json")
    (folder / name).write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ValueError, match=rf"holds pickle weights \({re.escape(name)}\) and no safetensors"):
        load_backbone(folder)
    assert main(["evaluate", "--checkpoint", str(folder), "--tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "safetensors only" in err[0]


def test_pickles_beside_safetensors_are_left_alone(tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(SHIPPED_BASE, folder)
    (folder / "optimizer.pt").write_bytes(b"\x80\x04")
    assert load_backbone(folder).image_size == load_backbone(SHIPPED_BASE).image_size


@pytest.mark.parametrize("source", ["s3://AKIAEXAMPLE:top-secret-key@bucket/images",
                                    "https://someone:top-secret-key@images.example.org/pool"])
def test_a_source_url_with_credentials_is_refused_before_anything_is_stored(source, asg_home, capsys):
    with pytest.raises(ValueError, match="carries credentials in its URL"):
        RoundConfig(source=source)
    assert main(["round", "--round-idx", "0", "--checkpoint", str(SHIPPED_BASE), "--source", source]) == 2
    err = capsys.readouterr().err
    assert "top-secret-key" not in err and "carries credentials" in err and len(err.strip().splitlines()) == 1
    assert not (asg_home / "lancedb").exists()


def test_messages_show_urls_without_their_credentials():
    assert redacted("https://user:tok3n@mlflow.example:5000/") == "https://***@mlflow.example:5000/"
    assert redacted("s3://bucket/prefix") == "s3://bucket/prefix"
    from flows.lineage import round_lineage
    from storage.settings import Settings

    settings = Settings.from_env()
    with pytest.raises(ValueError) as caught:
        round_lineage(0, "nothing-here", Settings(home=settings.home, lancedb_uri=settings.lancedb_uri,
                                                 objects_uri=settings.objects_uri,
                                                 mlflow_uri=f"sqlite:///{settings.home / 'm.db'}"))
    assert "no MLflow run of round 0" in str(caught.value)
