"""Bad inputs of the inference tools (issue 10): one line naming the file and the problem, exit code 2,
no traceback, never torch's advice to load with weights_only=False; checked before slow work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from tool_loader import load_tool

from bbavectors.checkpoint import save_checkpoint
from bbavectors.config import Config
from bbavectors.data.image_io import write_image
from bbavectors.models.builder import build_model
from DOTA_devkit.classes import SYNTHETIC

REPO = Path(__file__).resolve().parents[1]




def tiny_config() -> Config:
    cfg = Config()
    cfg.model.backbone = "resnet18"
    cfg.model.head_width = 16
    cfg.model.pretrained = None
    cfg.data.input_size = 64
    return cfg


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A good checkpoint, its broken variants, an image folder, a corrupt image, a plain file."""
    root = tmp_path_factory.mktemp("bad_inputs")
    torch.manual_seed(0)
    good = root / "good.pt"
    save_checkpoint(good, build_model(tiny_config(), len(SYNTHETIC)), tiny_config(), list(SYNTHETIC))
    data = good.read_bytes()
    (root / "truncated.pt").write_bytes(data[: len(data) // 2])
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)
    (root / "random.pt").write_bytes(noise.tobytes())
    other = torch.load(good, weights_only=True)
    other["config"]["model"]["backbone"] = "mobilenet_v2"  # resnet18 weights, another trunk's config
    torch.save(other, root / "other_backbone.pt")
    images = root / "images"
    images.mkdir()
    write_image(images / "a.png", np.full((40, 50, 3), 90, np.uint8))
    corrupt = root / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    plain = root / "plain.txt"
    plain.write_text("a file, not a folder\n")
    return {"good": good, "truncated": root / "truncated.pt", "random": root / "random.pt",
            "other": root / "other_backbone.pt", "missing": root / "missing.pt", "images": images,
            "corrupt": corrupt, "plain": plain, "root": root}


def run_tool(name: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = load_tool(name).main(argv)
    captured = capsys.readouterr()
    return rc, captured.err


def assert_one_line_error(rc: int, err: str, *must_contain: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("INFO", "WARNING"))]
    assert rc == 2, err
    assert len(lines) == 1 and "error:" in lines[0], err
    assert "Traceback" not in err and "weights_only" not in err
    for text in must_contain:
        assert text in lines[0], lines[0]


def checkpoint_argv(tool: str, ckpt: Path, files: dict[str, Path], out: Path) -> list[str]:
    if tool == "export_onnx":
        return ["--checkpoint", str(ckpt), "--out", str(out / "m.onnx")]
    if tool == "visualize":
        return ["--images", str(files["images"]), "--checkpoint", str(ckpt), "--out", str(out)]
    return ["--checkpoint", str(ckpt), "--images", str(files["images"]), "--out", str(out), "--workers", "0",
            "--device", "cpu"]


@pytest.mark.parametrize("tool", ["export_onnx", "visualize", "test"])
@pytest.mark.parametrize("kind", ["missing", "truncated", "random", "other"])
def test_bad_checkpoints_give_one_line_and_exit_2(
        tool: str, kind: str, files: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = files[kind]
    rc, err = run_tool(tool, checkpoint_argv(tool, ckpt, files, tmp_path / "out"), capsys)
    assert_one_line_error(rc, err, ckpt.name)
    assert not (tmp_path / "out" / "m.onnx").exists()


def test_bad_checkpoint_in_a_subprocess_has_no_traceback(files: dict[str, Path], tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, str(REPO / "tools" / "test.py"), "--checkpoint", str(files["random"]),
            "--images", str(files["images"]), "--out", str(tmp_path / "o")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert_one_line_error(proc.returncode, proc.stderr, "random.pt")


# ------------------------------------------------------------------------------------ test.py
def test_test_out_that_is_a_file(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = run_tool("test", ["--checkpoint", str(files["good"]), "--images", str(files["images"]),
                                "--out", str(files["plain"]), "--workers", "0", "--device", "cpu"], capsys)
    assert_one_line_error(rc, err, "plain.txt", "is a file")


def test_test_unwritable_out(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = run_tool("test", ["--checkpoint", str(files["good"]), "--images", str(files["images"]),
                                "--out", str(files["plain"] / "sub"), "--workers", "0", "--device", "cpu"],
                       capsys)
    assert_one_line_error(rc, err, "plain.txt")


# ---------------------------------------------------------------------------------- visualize
def test_regression_visualize_missing_folder_is_an_error(files: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """It printed 'wrote 0 picture(s)' and exited 0."""
    rc, err = run_tool("visualize", ["--images", str(tmp_path / "nope"), "--labels", str(tmp_path / "nope2"),
                                     "--out", str(tmp_path / "o")], capsys)
    assert_one_line_error(rc, err, "nope")
    rc, err = run_tool("visualize", ["--images", str(files["images"]), "--labels", str(tmp_path / "nolabels"),
                                     "--out", str(tmp_path / "o")], capsys)
    assert_one_line_error(rc, err, "nolabels")
    rc, err = run_tool("visualize", ["--images", str(files["images"]), "--det-dir", str(tmp_path / "nodets"),
                                     "--out", str(tmp_path / "o")], capsys)
    assert_one_line_error(rc, err, "nodets")


def test_visualize_corrupt_image_in_grid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bbavectors.data.synthetic import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "syn", 2, seed=1, image_size=64, progress=False,
                                  size_range=(14.0, 20.0), num_objects=(1, 2))
    victim = sorted((root / "images").iterdir())[0]
    victim.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    rc, err = run_tool("visualize", ["--images", str(root / "images"), "--out", str(tmp_path / "o"),
                                     "--grid", "2", "--classes", "synthetic"], capsys)
    assert_one_line_error(rc, err, victim.name)


def test_visualize_unwritable_out(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = run_tool("visualize", ["--images", str(files["images"]), "--checkpoint", str(files["good"]),
                                     "--out", str(files["plain"] / "pics")], capsys)
    assert_one_line_error(rc, err, "plain.txt")


# -------------------------------------------------------------------------------- export_onnx
def _no_export(monkeypatch: pytest.MonkeyPatch, tool: ModuleType) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the export ran before the inputs were checked")

    monkeypatch.setattr(tool, "export_checkpoint", fail)


def test_export_check_with_corrupt_image_fails_before_the_export(
        files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    tool = load_tool("export_onnx")
    _no_export(monkeypatch, tool)
    rc = tool.main(["--checkpoint", str(files["good"]), "--out", str(tmp_path / "m.onnx"), "--check",
                    str(files["corrupt"])])
    assert_one_line_error(rc, capsys.readouterr().err, "corrupt.png")


def test_export_unwritable_out_fails_before_the_export(
        files: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    tool = load_tool("export_onnx")
    _no_export(monkeypatch, tool)
    rc = tool.main(["--checkpoint", str(files["good"]), "--out", str(files["plain"] / "m.onnx")])
    assert_one_line_error(rc, capsys.readouterr().err, "plain.txt")
