"""tools/test.py end to end on a tiny synthetic set: Task1 files, --eval, --zip, --scenes, --pictures,
--split, and clear errors for bad checkpoints and empty folders."""

from __future__ import annotations

import importlib.util
import json
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from bbavectors.checkpoint import save_checkpoint
from bbavectors.config import Config
from bbavectors.data.synthetic import make_synthetic_dataset
from bbavectors.models.builder import build_model
from DOTA_devkit.classes import SYNTHETIC
from DOTA_devkit.labels import read_dota_label
from DOTA_devkit.task1 import read_task1_dir

REPO = Path(__file__).resolve().parents[1]


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bbav_tool_test", REPO / "tools" / "test.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    return load_tool()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("syn")
    make_synthetic_dataset(root, num_images=4, seed=3, image_size=96, progress=False)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = Config()
    cfg.model.backbone = "resnet18"
    cfg.model.head_width = 16
    cfg.model.pretrained = None
    cfg.data.input_size = 64
    cfg.decode.top_k = 30
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_checkpoint(path, build_model(cfg, len(SYNTHETIC)), cfg, SYNTHETIC, epoch=1)
    return path


def test_folder_run_with_eval_and_zip(tool: ModuleType, synthetic: Path, checkpoint: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    rc = tool.main(["--checkpoint", str(checkpoint), "--images", str(synthetic / "images"), "--out", str(out),
                    "--eval", str(synthetic / "labelTxt"), "--zip", "--workers", "1", "--batch-size", "3",
                    "--score-thresh", "0.05", "--device", "cpu", "--quiet"])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "4 image(s)" in stdout and "DOTA Task1 evaluation" in stdout
    names = sorted(p.name for p in out.glob("Task1_*.txt"))
    assert names == sorted(f"Task1_{c}.txt" for c in SYNTHETIC)
    dets = read_task1_dir(out)
    ids = {i for d in dets.values() for i in d.image_ids}
    assert ids and ids <= {p.stem for p in (synthetic / "images").glob("*.png")}
    # Original image coordinates: a 96 px image letterboxed to 64 px maps back into [0, 96].
    polys = np.concatenate([d.polygons for d in dets.values()])
    assert polys.min() > -96 and polys.max() < 2 * 96
    with zipfile.ZipFile(out / "task1.zip") as z:
        assert sorted(Path(n).name for n in z.namelist()) == names
    report = json.loads((out / "eval.json").read_text())
    assert report["level"] == "image" and report["images"] == 4
    # DOTA's npos: non-difficult objects per class, counted here straight from the label files.
    gt = {c: 0 for c in SYNTHETIC}
    for label in (synthetic / "labelTxt").glob("*.txt"):
        for obj in read_dota_label(label, SYNTHETIC).objects:
            gt[obj.class_name] += obj.difficult == 0
    assert sum(gt.values()) > 0
    assert {c: report["per_class"][c]["num_gt"] for c in SYNTHETIC} == gt
    assert {c: report["per_class"][c]["num_det"] for c in SYNTHETIC} == {c: len(d) for c, d in dets.items()}


def test_scenes_split_and_pictures(tool: ModuleType, synthetic: Path, checkpoint: Path,
                                   tmp_path: Path) -> None:
    out = tmp_path / "scenes"
    split = synthetic / "val.txt"
    wanted = [ln.strip() for ln in split.read_text().splitlines() if ln.strip()]
    rc = tool.main(["--checkpoint", str(checkpoint), "--images", str(synthetic / "images"), "--out", str(out),
                    "--scenes", "--split", str(split), "--subsize", "48", "--gap", "16",
                    "--rates", "0.5", "1.0", "--pictures", "--workers", "0", "--score-thresh", "0.05",
                    "--device", "cpu", "--quiet"])
    assert rc == 0
    assert sorted(p.stem for p in (out / "pictures").glob("*.png")) == sorted(wanted)
    dets = read_task1_dir(out)
    assert {i for d in dets.values() for i in d.image_ids} <= set(wanted)
    assert not (out / "merged").exists()


def test_bad_checkpoint_and_empty_folder_fail_clearly(
    tool: ModuleType, synthetic: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "bogus.pth"
    bogus.write_bytes(b"\x00\x01 definitely not a checkpoint")
    rc = tool.main(["--checkpoint", str(bogus), "--images", str(synthetic / "images"),
                    "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "not a usable bbavectors checkpoint" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = tool.main(["--checkpoint", str(checkpoint), "--images", str(empty), "--out", str(tmp_path / "o"),
                    "--device", "cpu"])
    assert rc == 2
    assert "no images" in capsys.readouterr().err
    rc = tool.main(["--checkpoint", str(checkpoint), "--images", str(synthetic / "images"), "--out",
                    str(tmp_path / "o"), "--scenes", "--subsize", "32", "--gap", "40", "--device", "cpu"])
    assert rc == 2
    assert "gap" in capsys.readouterr().err


def test_centre_shift_moves_every_box_in_original_pixels(
    tool: ModuleType, synthetic: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--centre-shift DX DY`` (input pixels) overrides the checkpoint's calibrated shift: 96 px images
    letterboxed into 64 px inputs move by (DX, DY) * 1.5 in original pixels; the scores do not change."""
    common = ["--checkpoint", str(checkpoint), "--images", str(synthetic / "images"), "--device", "cpu",
              "--score-thresh", "0.0", "--quiet", "--workers", "0"]
    assert tool.main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert tool.main([*common, "--out", str(tmp_path / "moved"), "--centre-shift", "2", "-1"]) == 0
    plain, moved = read_task1_dir(tmp_path / "plain"), read_task1_dir(tmp_path / "moved")
    checked = 0
    for name, d in plain.items():
        m = moved[name]
        assert d.image_ids == m.image_ids
        np.testing.assert_allclose(m.scores, d.scores)
        np.testing.assert_allclose(m.polygons, d.polygons + np.array([3.0, -1.5] * 4), atol=2e-3)
        checked += len(d.image_ids)
    assert checked > 0
    rc = tool.main([*common, "--out", str(tmp_path / "bad"), "--centre-shift", "nan", "0"])
    assert rc == 2
    assert "centre_shift must be two finite numbers" in capsys.readouterr().err


def test_tta_runs_and_refuses_onnx(
    tool: ModuleType, synthetic: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--tta flips`` runs end to end (Task1 files for every image); with ``--onnx`` it is refused
    before anything loads."""
    common = ["--checkpoint", str(checkpoint), "--images", str(synthetic / "images"), "--device", "cpu",
              "--score-thresh", "0.0", "--quiet", "--workers", "0"]
    assert tool.main([*common, "--out", str(tmp_path / "tta"), "--tta", "flips"]) == 0
    found = read_task1_dir(tmp_path / "tta")
    assert sum(len(d.image_ids) for d in found.values()) > 0
    rc = tool.main(["--onnx", str(tmp_path / "missing.onnx"), "--images", str(synthetic / "images"),
                    "--out", str(tmp_path / "bad"), "--tta", "flips"])
    assert rc == 2
    assert "--tta applies to --checkpoint" in capsys.readouterr().err
