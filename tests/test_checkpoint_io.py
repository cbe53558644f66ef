"""save_checkpoint is atomic and durable: the data reaches the disk before the rename."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import bbavectors.checkpoint as checkpoint_mod
from bbavectors.checkpoint import load_checkpoint, save_checkpoint
from bbavectors.config import Config


def test_regression_save_checkpoint_fsyncs_the_file_before_the_rename(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the fsync a power loss after os.replace could leave best.pt renamed but empty."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", str(os.fstat(fd).st_ino)))
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        events.append(("replace", str(src)))
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint_mod.os, "fsync", fsync)
    monkeypatch.setattr(checkpoint_mod.os, "replace", replace)
    target = tmp_path / "best.pt"
    save_checkpoint(target, torch.nn.Linear(2, 2), Config(), ["a"], epoch=3)
    kinds = [k for k, _ in events]
    before = events[: kinds.index("replace")]
    # The renamed file keeps its inode: the file synced before the rename is the checkpoint itself.
    assert ("fsync", str(target.stat().st_ino)) in before
    assert load_checkpoint(target)["epoch"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temporary file left


def test_regression_random_bytes_are_a_one_line_checkpoint_error(tmp_path: Path) -> None:
    # Unpickling random bytes raised IndexError (and other types) straight through load_checkpoint:
    # a traceback in train --resume about one run in ten. Every seed must give CheckpointLoadError.
    import random

    from bbavectors.checkpoint import CheckpointLoadError, load_checkpoint
    from bbavectors.models.weights import read_state_dict

    for seed in range(40):
        path = tmp_path / f"r{seed}.pt"
        data = random.Random(seed).randbytes(512)
        path.write_bytes(b"\x80\x02" + data if seed % 2 else data)  # half start like a pickle
        with pytest.raises(CheckpointLoadError, match=f"r{seed}.pt is not a usable"):
            load_checkpoint(path)
        with pytest.raises(CheckpointLoadError, match="not a usable weight file"):
            read_state_dict(path)


def test_regression_full_disk_names_the_checkpoint_and_keeps_the_old_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A full disk made torch.save raise a bare "PytorchStreamWriter failed writing file" that named
    # neither the checkpoint nor the cause. The old checkpoint must survive and nothing be left.
    from bbavectors.checkpoint import CheckpointWriteError

    target = tmp_path / "last.pt"
    save_checkpoint(target, torch.nn.Linear(2, 2), Config(), ["a"], epoch=1)

    def full_disk(obj: object, f: object) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")

    monkeypatch.setattr(checkpoint_mod.torch, "save", full_disk)
    expected = r"cannot write .*last\.pt: .*MiB free on its disk.*unchanged"
    with pytest.raises(CheckpointWriteError, match=expected):
        save_checkpoint(target, torch.nn.Linear(2, 2), Config(), ["a"], epoch=2)
    monkeypatch.undo()
    assert load_checkpoint(target)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
