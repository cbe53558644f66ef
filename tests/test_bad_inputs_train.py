"""``tools/train.py`` with bad input: exit code 2, one line on stderr naming the problem, no traceback,
and no run folder left behind. A few cases run as real subprocesses; the rest call ``main`` in this
process (same code path, without paying the interpreter start each time)."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train_engine import make_tiny_dataset, tiny_config
from tool_loader import load_tool

from bbavectors.checkpoint import save_checkpoint
from bbavectors.models.builder import build_model
from DOTA_devkit.classes import SYNTHETIC

REPO = Path(__file__).resolve().parents[1]



train_tool = load_tool("train")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("bad_data"), num_images=8)


@pytest.fixture(scope="module")
def resumable(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mobilenet_v2 checkpoint with the keys a resume needs."""
    cfg = tiny_config(root)
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    save_checkpoint(path, build_model(cfg, len(SYNTHETIC)), cfg, SYNTHETIC, optimizer={}, scheduler={},
                    epoch=1, step=2)
    return path


def _args(root: Path, runs: Path, *extra: str) -> list[str]:
    return ["--data", str(root), "--classes", "synthetic", "--backbone", "mobilenet_v2", "--head-width", "16",
            "--input-size", "64", "--batch-size", "4", "--epochs", "1", "--workers", "0", "--device", "cpu",
            "--amp", "none", "--runs-dir", str(runs), "--name", "r", "--quiet", "--threads", "1", *extra]


def _assert_one_line_error(rc: int, err: str, *words: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("20")]  # log lines
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert not lines[0].startswith(("error: '", 'error: "')), err  # the message, not its repr
    assert "weights_only" not in err  # never advise loading an untrusted file unsafely
    for word in words:
        assert word in lines[0], (word, lines[0])


def _main_error(capsys: pytest.CaptureFixture[str], argv: list[str], *words: str) -> None:
    rc = train_tool.main(argv)
    _assert_one_line_error(rc, capsys.readouterr().err, *words)


# ------------------------------------------------------------------------------------ subprocesses
@pytest.mark.parametrize("case", ["epochs0", "truncated_resume", "runs_dir_is_a_file"])
def test_subprocess_bad_input_exits_2_with_one_line(case: str, root: Path, resumable: Path,
                                                    tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    if case == "epochs0":
        argv, words = _args(root, runs, "--epochs", "0"), ("train.epochs",)
    elif case == "truncated_resume":
        bad = tmp_path / "cut.pt"
        bad.write_bytes(resumable.read_bytes()[:300])
        argv, words = ["--resume", str(bad)], ("cut.pt",)
    else:
        runs.write_text("not a folder")
        argv, words = _args(root, runs), ("--runs-dir", "is a file")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), *argv], capture_output=True,
                          text=True, env=env, timeout=300)
    _assert_one_line_error(proc.returncode, proc.stderr, *words)
    assert case == "runs_dir_is_a_file" or not runs.exists()


# ------------------------------------------------------------------------------------ values
@pytest.mark.parametrize(("flags", "words"), [
    (["--epochs", "0"], ("train.epochs", "0")),
    (["--batch-size", "0"], ("train.batch_size",)),
    (["--lr", "-1"], ("train.lr",)),
    (["--lr", "nan"], ("train.lr", "nan")),
    (["--input-size", "0"], ("data.input_size",)),
    (["--input-size", "100"], ("data.input_size", "multiple of 32")),
    (["--backbone", "resnet19"], ("model.backbone", "resnet19")),
    (["--time", "0"], ("train.time_budget",)),
    (["--classes", "/no/such/classes.txt"], ("/no/such/classes.txt",)),
])
def test_bad_values_exit_2(flags: list[str], words: tuple[str, ...], root: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    _main_error(capsys, _args(root, runs) + flags, *words)
    assert not runs.exists()  # a failed start leaves no run folder


def test_runs_dir_below_a_file_exits_2(root: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _main_error(capsys, _args(root, blocker / "runs"), "--runs-dir", "is a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_runs_dir_exits_2(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    _main_error(capsys, _args(root, ro / "runs"), "not writable")


# ------------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("kind", ["missing", "truncated", "random", "other_backbone"])
def test_bad_resume_checkpoint_exits_2(kind: str, resumable: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / f"{kind}.pt"
    extra: list[str] = []
    if kind == "truncated":
        path.write_bytes(resumable.read_bytes()[:1000])
    elif kind == "random":
        path.write_bytes(os.urandom(4096))
    elif kind == "other_backbone":
        path = resumable
        extra = ["--backbone", "resnet18"]
    _main_error(capsys, ["--resume", str(path), "--quiet", "--threads", "1", *extra], path.name)


@pytest.mark.parametrize("kind", ["missing", "truncated", "random", "other_backbone"])
def test_bad_pretrained_file_exits_2(kind: str, root: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    import torchvision

    path = tmp_path / f"{kind}.pth"
    state = torchvision.models.resnet18().state_dict()  # a resnet18 file for a mobilenet_v2 trunk
    if kind != "missing":
        torch.save(state, path)
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:2000])
    elif kind == "random":
        path.write_bytes(os.urandom(4096))
    runs = tmp_path / "runs"
    _main_error(capsys, _args(root, runs, "--pretrained", str(path)), "model.pretrained", path.name)
    assert not runs.exists()


# ------------------------------------------------------------------------------------ disk full
@pytest.mark.parametrize("error, message", [
    (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
    # What torch.save really raises on a full disk (seen in CI): a bare RuntimeError from its zip
    # writer. It escaped as a traceback because only OSError was caught.
    (RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0"), "MiB free"),
])
def test_regression_disk_full_while_saving_is_one_line(root: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       error: Exception, message: str) -> None:
    import bbavectors.checkpoint as checkpoint_mod

    def full(obj: object, f: io.BufferedWriter) -> None:
        f.write(b"partial")
        raise error

    monkeypatch.setattr(checkpoint_mod.torch, "save", full)
    _main_error(capsys, _args(root, tmp_path / "runs", "--set", "train.val_every=5"), "last.pt",
                message)
    assert not list((tmp_path / "runs" / "r").glob(".*.tmp"))  # the partial file is removed


def test_regression_unreadable_training_images_are_counted_in_the_summary(
        root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Replacements happen in loader workers; the summary must still count them (it said nothing)."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(root, data)
    first = (data / "trainval.txt").read_text().split()[0]
    image = next((data / "images").glob(f"{first}.*"))
    image.write_bytes(image.read_bytes()[:40])  # truncated: unreadable
    rc = train_tool.main(_args(data, tmp_path / "runs", "--workers", "2"))
    out = capsys.readouterr().out
    assert rc == 0
    assert "WARNING 1 training sample(s) replaced (unreadable images)" in out, out
