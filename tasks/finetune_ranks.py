"""Data-parallel fine-tuning: the `torchrun` launch of the fine-tune stage and the code each rank runs.

The stage (tasks/finetune.py, `processes` > 1) runs

    python -m torch.distributed.run --standalone --nproc-per-node N -m tasks.finetune_ranks ARGS.json

Every rank joins the process group (NCCL when CUDA is available, else gloo), trains its slice of
each global batch (models/data_parallel.py) and rank 0 alone saves the checkpoint, which is
published by copy-then-swap (storage/checkpoints.py), then writes the metrics next to ARGS.json.
A rank that fails makes torchrun stop the others and exit non-zero: the stage fails with the
ranks' log tail, and the output checkpoint is not replaced. On a GPU machine the same launch is
what `torchrun --nproc-per-node 8` does by hand; the stage passes `--standalone` (one node).

`ASG_FAULT_RANK=<rank>` (tests only) makes that rank fail as soon as it has joined the group, while
the others start training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from storage.settings import Settings


def launch(args: dict, processes: int, settings: Settings, timeout_s: float | None = None
           ) -> tuple[dict[str, float], dict[str, float]]:
    """Run `train_roles(**args)` on `processes` ranks; returns rank 0's (metrics, betas)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="finetune-ranks-", dir=settings.home) as work:
        spec = Path(work) / "args.json"
        spec.write_text(json.dumps(args))
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes))}
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                   "--log-dir", str(Path(work) / "logs"), "--tee", "3", "-m", "tasks.finetune_ranks", str(spec)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s,
                              cwd=Path(__file__).resolve().parent.parent)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr)[-3000:]
            raise RuntimeError(f"data-parallel fine-tune on {processes} ranks failed (exit {done.returncode}); "
                               f"the output checkpoint {args['output_uri']} was not replaced:\n{tail}")
        result = json.loads((Path(work) / "result.json").read_text())
    return result["metrics"], result["betas"]


def _run_rank(spec: Path) -> None:
    import torch
    import torch.distributed as dist

    from tasks.finetune import train_roles

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        os.environ["ASG_DEVICE"] = f"cuda:{local_rank}"
    dist.init_process_group(backend)
    try:
        _arm_fault(dist.get_rank())
        metrics, betas = train_roles(**json.loads(spec.read_text()))
        dist.barrier()
        if dist.get_rank() == 0:
            (spec.parent / "result.json").write_text(json.dumps({"metrics": metrics, "betas": betas}))
    finally:
        dist.destroy_process_group()


def _arm_fault(rank: int) -> None:
    """Tests only: this rank fails right after joining the process group."""
    if os.environ.get("ASG_FAULT_RANK") == str(rank):
        raise RuntimeError(f"injected failure on rank {rank} (ASG_FAULT_RANK)")


if __name__ == "__main__":
    _run_rank(Path(sys.argv[1]))
