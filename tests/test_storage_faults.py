"""Storage faults: a disk that fills up during a checkpoint save, and an object store that drops or fails PUTs
(a fault-injecting proxy on 127.0.0.1 in front of moto's S3 server). The previous checkpoint stays current, the
failure is one line, and retried writes end with the same rows."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from storage.checkpoints import LATEST, local_checkpoint, publish_checkpoint, save_checkpoint
from storage.settings import Settings
from storage.tables import connect, read, upsert
from tests.conftest import SHIPPED_BASE
from tests.fault_proxy import FaultProxy

ROOT = Path(__file__).resolve().parent.parent


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_checkpoint_save_that_runs_out_of_space_leaves_the_old_one_current(asg_home, tmp_path):
    from models.registry import load_backbone

    settings = Settings.from_env()
    target = tmp_path / "store" / "checkpoints" / "round-0"
    save_checkpoint(load_backbone(SHIPPED_BASE), str(target), settings)
    before = _digests(target)
    # The same save in a process that may write no file above 64 KB (SIGXFSZ ignored, so writes fail with EFBIG).
    script = (f"import resource, signal, sys\n"
              f"signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              f"from models.registry import load_backbone\n"
              f"from storage.checkpoints import StorageFull, save_checkpoint\n"
              f"from storage.settings import Settings\n"
              f"backbone = load_backbone({str(SHIPPED_BASE)!r})\n"
              f"resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))\n"
              f"try:\n"
              f"    save_checkpoint(backbone, {str(target)!r}, Settings.from_env())\n"
              f"except StorageFull as exc:\n"
              f"    print(exc); sys.exit(3)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr[-2000:]
    message = done.stdout.strip().splitlines()
    assert len(message) == 1 and message[0].startswith(f"checkpoint {target} not saved: file too large while "
                                                       f"writing under ")
    assert message[0].endswith("the previous checkpoint there (if any) is still current")
    assert _digests(target) == before  # the old checkpoint, byte for byte
    assert sorted(p.name for p in target.parent.iterdir()) == ["round-0"]  # no staging folder left
    assert not list(asg_home.glob("ckpt-*"))  # nor the local temporary save


def test_folders_of_saves_killed_midway_are_swept_and_an_interrupted_swap_is_undone(asg_home, tmp_path):
    import socket

    from models.registry import load_backbone

    settings = Settings.from_env()
    settings.home.mkdir(parents=True, exist_ok=True)
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that is gone
    host = socket.gethostname()
    target = tmp_path / "store" / "checkpoints" / "round-0"
    target.parent.mkdir(parents=True)
    left = [settings.home / f"ckpt-{host}-{dead.pid}-abc", target.parent / f".round-0-{host}-{dead.pid}-abc"]
    live = [settings.home / f"ckpt-{host}-1-abc", settings.home / f"ckpt-otherhost-{dead.pid}-abc"]
    for folder in left + live:
        folder.mkdir()
        (folder / "adapter_solver.safetensors").write_bytes(b"half")
    # a swap killed between its two renames: the previous checkpoint sits in its retired folder, none at the target
    retired = target.parent / f".round-0-old-{host}-{dead.pid}-xyz"
    retired.mkdir()
    publish_checkpoint(SHIPPED_BASE, str(retired / "round-0"), settings)
    previous = _digests(retired / "round-0")

    assert _digests(local_checkpoint(str(target), settings)) == previous  # the previous checkpoint is current

    backbone = load_backbone(SHIPPED_BASE)
    save_checkpoint(backbone, str(tmp_path / "elsewhere"), settings)  # any save sweeps $ASG_HOME
    assert [f.exists() for f in left[:1] + live] == [False, True, True]
    save_checkpoint(backbone, str(target), settings)
    assert sorted(p.name for p in target.parent.iterdir()) == ["round-0"]  # staging and retired folders gone


def test_the_cli_reports_a_full_disk_in_one_line(monkeypatch, capsys):
    import errno

    from flows import cli
    from storage.checkpoints import StorageFull

    def full(args):
        raise StorageFull(errno.ENOSPC, "checkpoint /x not saved: no space left on device while writing under /y; "
                                        "the previous checkpoint there (if any) is still current")

    monkeypatch.setattr(cli, "cmd_round", full)  # the fine-tune stage's save, failing as a full disk makes it
    assert cli.main(["round", "--round-idx", "0", "--checkpoint", str(SHIPPED_BASE)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["asg: checkpoint /x not saved: no space left on device while writing under /y; the previous "
                   "checkpoint there (if any) is still current"]


def _s3_settings(monkeypatch, endpoint: str) -> Settings:
    """S3 settings under this test's own prefix: moto keeps one bucket state per process, shared by its servers."""
    prefix = hashlib.sha1(os.environ["PYTEST_CURRENT_TEST"].split(" ")[0].encode()).hexdigest()[:12]
    monkeypatch.setenv("ASG_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("ASG_LANCEDB_URI", f"s3://asg/{prefix}/lancedb")
    monkeypatch.setenv("ASG_OBJECTS_URI", f"s3://asg/{prefix}/objects")
    return Settings.from_env()


def _fresh_s3fs():
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


def test_an_interrupted_checkpoint_upload_leaves_the_previous_checkpoint_current(asg_home, moto_s3, monkeypatch,
                                                                                 tmp_path):
    import shutil

    settings = _s3_settings(monkeypatch, moto_s3)
    uri = f"{settings.objects_uri}/checkpoints/round-0"
    publish_checkpoint(SHIPPED_BASE, uri, settings)
    first = _digests(local_checkpoint(uri, settings))
    changed = tmp_path / "changed"
    shutil.copytree(SHIPPED_BASE, changed)
    (changed / "card.json").write_text('{"changed": true}')
    with FaultProxy(moto_s3, fail_puts_from=2, mode="drop") as proxy:  # the connection dies after the first PUT
        _fresh_s3fs()
        with pytest.raises(Exception):
            publish_checkpoint(changed, uri, _s3_settings(monkeypatch, proxy.url))
        assert proxy.faults and proxy.puts >= 2
    _fresh_s3fs()
    settings = _s3_settings(monkeypatch, moto_s3)
    shutil.rmtree(asg_home / "checkpoint_cache", ignore_errors=True)
    assert _digests(local_checkpoint(uri, settings)) == first  # LATEST still names the complete old version
    publish_checkpoint(changed, uri, settings)  # once the store is healthy again the new one goes in whole
    assert _digests(local_checkpoint(uri, settings)) == _digests(changed)
    import s3fs

    fs = s3fs.S3FileSystem(key=os.environ["AWS_ACCESS_KEY_ID"], secret=os.environ["AWS_SECRET_ACCESS_KEY"],
                          endpoint_url=moto_s3)
    assert fs.cat_file(f"{uri.removeprefix('s3://')}/{LATEST}").decode().startswith("v-")


@pytest.mark.parametrize("mode", ["error", "drop"])
def test_table_writes_and_a_publish_through_transient_put_faults_end_with_the_same_rows(asg_home, moto_s3,
                                                                                       monkeypatch, mode):
    rows = [{"image_id": f"img-{k}", "width": 32, "height": 32, "png": bytes([k]) * 10} for k in range(20)]
    clean = _s3_settings(monkeypatch, moto_s3)
    with FaultProxy(moto_s3, fail_puts={2, 4, 7}, mode=mode, read_delay_s=0.05) as proxy:
        _fresh_s3fs()
        faulty = _s3_settings(monkeypatch, proxy.url)
        db = connect(faulty)
        for start in range(0, 20, 5):
            upsert(db, "images", _image_rows(rows[start:start + 5]))
        publish_checkpoint(SHIPPED_BASE, f"{faulty.objects_uri}/checkpoints/round-0", faulty)
        assert len(proxy.faults) == 3
    _fresh_s3fs()
    got = read(connect(_s3_settings(monkeypatch, moto_s3)), "images").sort_values("image_id").reset_index(drop=True)
    want = pd.DataFrame(_image_rows(rows)).sort_values("image_id").reset_index(drop=True)
    assert got["image_id"].tolist() == want["image_id"].tolist() and got["image_id"].is_unique
    assert np.array_equal(got["png"].map(bytes).tolist(), want["png"].tolist())
    assert _digests(local_checkpoint(f"{clean.objects_uri}/checkpoints/round-0", clean)) == _digests(SHIPPED_BASE)


def _image_rows(rows: list[dict]) -> list[dict]:
    from storage.schemas import SCHEMAS

    names = SCHEMAS["images"].names
    return [{name: row.get(name, "" if name not in ("width", "height") else 32) for name in names} for row in rows]
