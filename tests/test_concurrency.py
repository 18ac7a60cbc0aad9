"""Concurrent rounds on one store: a round's lease lets one run at a time, a dead holder's lease lapses, and
rounds with other indices keep their own rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from storage.leases import LeaseHeld, release_lease, round_lease, take_lease
from storage.settings import Settings
from storage.tables import connect, read
from tests.conftest import SHIPPED_BASE

ROOT = Path(__file__).resolve().parent.parent


def _leases(settings: Settings) -> Path:
    return Path(settings.objects_uri) / "leases"


def _write_lease(settings: Settings, name: str, generation: int, **record) -> None:
    folder = _leases(settings)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.{generation:06d}").write_text(json.dumps(record))


def _race(settings: Settings, name: str, n_takers: int) -> tuple[list, list]:
    """`n_takers` threads released together, each taking `name`'s lease: (leases won, refusals)."""
    won, refused, start = [], [], threading.Barrier(n_takers)

    def take() -> None:
        start.wait()
        try:
            won.append(take_lease(settings, name, ttl_s=60))
        except LeaseHeld:
            refused.append(1)

    threads = [threading.Thread(target=take) for _ in range(n_takers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, refused


def test_a_held_lease_refuses_a_second_taker_with_its_holder_and_is_free_after_release(asg_home):
    settings = Settings.from_env()
    first = take_lease(settings, "round-0", ttl_s=60)
    with pytest.raises(LeaseHeld, match=rf"round-0 is being run by {first.holder} \(pid {os.getpid()} on "):
        take_lease(settings, "round-0", ttl_s=60)
    other = take_lease(settings, "round-1", ttl_s=60)  # another round of the same store is free
    release_lease(settings, first)
    again = take_lease(settings, "round-0", ttl_s=60)
    assert again.holder != first.holder and [p.name for p in sorted(_leases(settings).iterdir())] == [
        "round-0.000001", "round-1.000001"]
    release_lease(settings, again)
    release_lease(settings, other)
    assert not list(_leases(settings).iterdir())


def test_a_dead_holders_lease_lapses_at_once_on_this_host_and_at_expiry_elsewhere(asg_home):
    import socket

    settings = Settings.from_env()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    now = time.time()
    _write_lease(settings, "round-0", 1, holder="gone", host=socket.gethostname(), pid=int(dead.stdout),
                 started_at=now, expires_at=now + 3600)
    lease = take_lease(settings, "round-0", ttl_s=60)  # its process is gone: no need to wait an hour
    assert lease.generation == 2 and not (_leases(settings) / "round-0.000001").exists()
    release_lease(settings, lease)
    _write_lease(settings, "round-3", 1, holder="remote", host="another-host", pid=1, started_at=now,
                 expires_at=time.time() + 1.0)
    with pytest.raises(LeaseHeld, match="run by remote .* lapses at"):
        take_lease(settings, "round-3", ttl_s=60)
    time.sleep(1.2)
    release_lease(settings, take_lease(settings, "round-3", ttl_s=60))


def test_racing_takers_of_a_lapsed_lease_leave_exactly_one_holder(asg_home):
    settings = Settings.from_env()
    _write_lease(settings, "round-0", 4, holder="remote", host="another-host", pid=1, started_at=0.0, expires_at=1.0)
    won, refused = _race(settings, "round-0", 8)
    assert len(won) == 1 and len(refused) == 7 and won[0].generation == 5


def test_a_held_lease_is_renewed_past_its_time_to_live(asg_home):
    settings = Settings.from_env()
    with round_lease(settings, "round-0", ttl_s=0.6) as lease:
        time.sleep(1.5)
        with pytest.raises(LeaseHeld):
            take_lease(settings, "round-0", ttl_s=0.6)
        record = json.loads(Path(lease.path).read_text())
        assert record["expires_at"] > time.time()
    assert not Path(lease.path).exists()


@pytest.mark.integration
def test_a_second_round_of_the_same_index_fails_fast_while_other_indices_run(asg_home, database):
    """A CLI round runs in a subprocess; meanwhile the same round index is refused in a few seconds with one line,
    and round 1 runs beside it. Afterwards every table has unique keys and each round its own rows."""
    from flows.cli import main
    from flows.round import round_flow
    from tests.test_round_flow import TABLES, _config

    settings = Settings.from_env()
    env = {**os.environ, "ASG_HOME": str(asg_home), "TQDM_DISABLE": "1"}
    if database == "sqlite":
        env.pop("PREFECT_API_URL", None)  # the subprocess runs its own temporary Prefect server
    # on PostgreSQL both rounds report to the one Prefect server and the one MLflow database of the test
    args = [sys.executable, "-m", "flows.cli", "round", "--round-idx", "0", "--checkpoint", str(SHIPPED_BASE),
            "--source", "world://unlabeled?n=12&seed=5", "--images", "12", "--quick"]
    holder = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while not any(_leases(settings).glob("round-0.*")) if _leases(settings).exists() else True:
            assert holder.poll() is None and time.time() < deadline, "the CLI round never took its lease"
            time.sleep(0.2)
        started = time.monotonic()
        with pytest.raises(LeaseHeld, match=r"round-0 is being run by .* \(pid \d+ on "):
            round_flow(0, str(SHIPPED_BASE), _config())
        assert time.monotonic() - started < 30
        assert main(["round", "--round-idx", "0", "--checkpoint", str(SHIPPED_BASE), "--quick",
                     "--source", "world://unlabeled?n=12&seed=5", "--images", "12"]) == 2
        round_flow(1, str(SHIPPED_BASE), _config())  # another index of the same store runs meanwhile
        output, _ = holder.communicate(timeout=600)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert holder.returncode == 0, output[-2000:]
    db = connect(settings)
    for table in TABLES:
        frame = read(db, table)
        key = frame.columns[0]
        assert frame[key].is_unique, table
        if "round_idx" in frame and table not in ("evaluations",):
            assert set(frame["round_idx"]) <= {0, 1}, table
    questions = read(db, "questions")
    assert set(questions["round_idx"]) == {0, 1}
    assert not any(_leases(settings).iterdir())  # both released


def test_leases_in_s3_refuse_a_second_taker_and_racing_takers_leave_one_holder(asg_home, moto_s3, monkeypatch):
    """On S3 the exclusive create is a conditional PUT (If-None-Match: *); moto honours it as S3 does."""
    import s3fs

    monkeypatch.setenv("ASG_S3_ENDPOINT_URL", moto_s3)
    monkeypatch.setenv("ASG_OBJECTS_URI", "s3://asg/lease-test/objects")
    s3fs.S3FileSystem.clear_instance_cache()
    settings = Settings.from_env()
    first = take_lease(settings, "round-0", ttl_s=60)
    with pytest.raises(LeaseHeld, match=rf"round-0 is being run by {first.holder}"):
        take_lease(settings, "round-0", ttl_s=60)
    release_lease(settings, first)
    won, refused = _race(settings, "round-1", 6)
    assert len(won) == 1 and len(refused) == 5 and won[0].generation == 1
    release_lease(settings, won[0])
