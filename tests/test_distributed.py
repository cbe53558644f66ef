"""Two CPU processes under ``torch.distributed.run`` (torchrun) on gloo: DDP keeps the weights identical,
the DistributedSampler gives each rank its own images, only rank 0 writes the run folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from test_train_engine import make_tiny_dataset

from bbavectors.checkpoint import load_checkpoint

TESTS_DIR = Path(__file__).resolve().parent

#: Each rank trains, then saves its parameters, buffers and the image ids it trained on.
WORKER = textwrap.dedent("""
    import sys
    from pathlib import Path

    import torch

    sys.path.insert(0, sys.argv[4])
    from bbavectors.engine.distributed import read_dist_env
    from bbavectors.engine.trainer import Trainer
    from test_train_engine import tiny_config

    root, run_dir, out = map(Path, sys.argv[1:4])
    info = read_dist_env()
    cfg = tiny_config(root, "train.epochs=2", "train.val_every=2", "train.batch_size=2")
    trainer = Trainer(cfg, run_dir, dist_info=info, progress=False, threads=1)
    seen = []
    original_step = trainer.train_step

    def train_step(batch):
        seen.extend(batch["image_ids"])
        return original_step(batch)

    trainer.train_step = train_step
    try:
        result = trainer.fit()
        torch.save({"params": dict(trainer.model.named_parameters()), "seen": seen, "steps": result.steps,
                    "lr": trainer.optimizer.param_groups[0]["lr"], "world": info.world_size,
                    "wrapped": type(trainer.train_model).__name__}, out / f"rank{info.rank}.pt")
    finally:
        trainer.close()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_ranks_end_with_identical_weights(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "data")
    run_dir, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(script), str(root), str(run_dir), str(out), str(TESTS_DIR)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    r0 = torch.load(out / "rank0.pt", weights_only=True)
    r1 = torch.load(out / "rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2 and r0["wrapped"] == "DistributedDataParallel"
    assert r0["params"].keys() == r1["params"].keys()
    for name, p0 in r0["params"].items():
        assert torch.equal(p0, r1["params"][name]), f"{name} differs between ranks"
    # 12 training images, 2 ranks x 2 images per step: 3 steps per epoch, disjoint shards.
    assert r0["steps"] == r1["steps"] == 6 and r0["lr"] == r1["lr"]
    first0, first1 = set(r0["seen"][:6]), set(r1["seen"][:6])
    assert not first0 & first1 and len(first0 | first1) == 12
    # Only rank 0 writes the run folder; its checkpoint holds the plain model's keys.
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["world_size"] == 2 and ckpt["step"] == 6
    assert not any(k.startswith("module.") for k in ckpt["model"])
    assert (run_dir / "best.pt").is_file() and (run_dir / "metrics.jsonl").is_file()


def test_single_process_without_torchrun_is_not_distributed() -> None:
    from bbavectors.engine.distributed import read_dist_env

    assert not read_dist_env({}).distributed
    info = read_dist_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})
    assert info.distributed and info.rank == 1 and not info.is_main
