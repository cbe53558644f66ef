"""One path from image to detections: validation and tools/test.py read, predict and score images the
same way (same mAP on the same weights and images), unreadable validation images are skipped and
counted (never replaced), and pictures of huge images stay small."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import bbavectors.drawing as drawing
from bbavectors.checkpoint import save_checkpoint
from bbavectors.config import Config, apply_overrides
from bbavectors.data.dataset import DotaDataset
from bbavectors.data.image_io import read_image
from bbavectors.data.letterbox import normalize_images
from bbavectors.data.loader import build_dataloader
from bbavectors.data.synthetic import make_synthetic_dataset
from bbavectors.engine.draw import prediction_picture, save_picture
from bbavectors.engine.validate import run_validation
from bbavectors.models.builder import build_model
from bbavectors.roundtrip import ideal_outputs
from bbavectors.targets import encode_targets
from DOTA_devkit.classes import SYNTHETIC
from DOTA_devkit.labels import DotaObject, LabelFile

ROOT = Path(__file__).resolve().parents[1]
IMAGE = 96
INPUT = 64


def tiny_config(root: Path) -> Config:
    return apply_overrides(Config(name="tiny"), [
        f"data.root={root}", "data.classes=synthetic", f"data.input_size={INPUT}", "data.workers=0",
        "model.backbone=mobilenet_v2", "model.head_width=16", "model.pretrained=null", "decode.top_k=50",
        "decode.score_thresh=0.05"])


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 validation images of 96 px with 2-4 objects."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("one_path"), 16, 5, image_size=IMAGE,
                                  progress=False, num_objects=(2, 4), size_range=(20.0, 40.0),
                                  val_fraction=0.5, test_fraction=0.0, border_fraction=0.0,
                                  difficult_fraction=0.0)


def _val_set(root: Path) -> DotaDataset:
    return DotaDataset(root, "val", SYNTHETIC, INPUT)


def _corrupt_first(root: Path, n: int) -> list[str]:
    val = _val_set(root)
    ids = []
    for record in val.records[:n]:
        Path(record.path).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        ids.append(record.image_id)
    return ids


class LookupPerfectModel(nn.Module):
    """The ideal head logits of each known input image (looked up by its normalised pixels): a
    perfect detector that does not care about batch order or which images are left out."""

    def __init__(self, table: dict[bytes, dict[str, Tensor]]) -> None:
        super().__init__()
        self.table = table
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        outs = [self.table[x[i].contiguous().numpy().tobytes()] for i in range(x.shape[0])]
        return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}


def perfect_model(val: DotaDataset, cfg: Config, wh_noise: float = 0.0) -> LookupPerfectModel:
    """The lookup model of ``val``'s readable images; ``wh_noise`` (cells) spoils the box sizes
    (seeded) so that some detections miss: an AP strictly between 0 and 1."""
    gen = torch.Generator().manual_seed(0)
    table = {}
    for i in range(len(val)):
        try:
            sample = val.load_sample(i)
        except OSError:
            continue  # unreadable: the model never sees it
        targets = encode_targets([sample["polygons"]], [sample["classes"]], [sample["difficult"]],
                                 len(SYNTHETIC), (INPUT, INPUT), cfg.targets)
        key = normalize_images(sample["image"][None], cfg.data.mean, cfg.data.std)[0].numpy().tobytes()
        outputs = ideal_outputs(targets)
        outputs["wh"] = outputs["wh"] + wh_noise * torch.randn(outputs["wh"].shape, generator=gen)
        table[key] = outputs
    return LookupPerfectModel(table)


def test_regression_validation_skips_unreadable_images_and_scores_a_perfect_detector_one(
        data: Path, tmp_path: Path) -> None:
    """Issue 10 §1.4: the data set returned the next readable image for an unreadable one, so that
    image was scored twice against the wrong labels (AP07 0.73 for a perfect detector)."""
    import shutil

    root = Path(shutil.copytree(data, tmp_path / "data"))
    cfg = tiny_config(root)
    bad = _corrupt_first(root, 3)
    val = _val_set(root)
    loader = build_dataloader(val, batch_size=4, shuffle=False, workers=0)
    result = run_validation(perfect_model(val, cfg), loader, cfg, SYNTHETIC, val.ground_truth(),
                            torch.device("cpu"), progress=False)
    assert result.unreadable == bad and result.num_unreadable == 3
    assert result.num_images == len(val) - 3 and result.scalars()["unreadable"] == 3.0
    assert result.task1.map07_present == pytest.approx(1.0)
    assert set(result.samples).isdisjoint(bad)


def test_validation_map_equals_test_py_map(data: Path, tmp_path: Path) -> None:
    """Same checkpoint, same images (one of them unreadable): validation and tools/test.py --eval give
    the same mAP, to the last digit, because they are one path."""
    import shutil

    root = Path(shutil.copytree(data, tmp_path / "data"))
    cfg = apply_overrides(tiny_config(root), ["decode.score_thresh=0.0", "decode.top_k=100"])
    _corrupt_first(root, 1)
    torch.manual_seed(0)
    model = build_model(cfg, len(SYNTHETIC)).eval()
    with torch.no_grad():  # random weights, clear peaks and ~30 px boxes: some detections hit objects
        model.heads.hm[-1].weight.mul_(20.0)
        model.heads.wh[-1].weight.zero_()
        model.heads.wh[-1].bias.copy_(torch.tensor([0.0, -3.0, 3.0, 0.0, 0.0, 3.0, -3.0, 0.0, 6.0, 6.0]))
    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, model, cfg, list(SYNTHETIC))
    val = _val_set(root)
    loader = build_dataloader(val, batch_size=3, shuffle=False, workers=0)
    result = run_validation(model, loader, cfg, SYNTHETIC, val.ground_truth(), torch.device("cpu"),
                            progress=False)
    out = tmp_path / "test_out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "test.py"), "--checkpoint", str(ckpt), "--images",
         str(root / "images"), "--split", str(root / "val.txt"), "--eval", str(root / "labelTxt"),
         "--out", str(out), "--device", "cpu", "--workers", "0", "--batch-size", "3", "--quiet",
         # The validation above ran in float32; test.py's default (auto) is bf16 on a bf16 CPU.
         "--amp", "none"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "eval.json").read_text())
    assert report["unreadable_images"] == result.unreadable and len(result.unreadable) == 1
    assert sum(c.num_det for c in result.task1.per_class.values()) > 0
    assert report["map07"] == result.task1.map07
    assert report["map_area"] == result.task1.map_area
    for name in SYNTHETIC:
        for key in ("num_det", "num_tp", "num_gt", "ap07"):
            assert report["per_class"][name][key] == getattr(result.task1.per_class[name], key)


def test_validation_map_equals_run_inference_map_on_an_imperfect_detector(data: Path, tmp_path: Path) -> None:
    """The same comparison with an mAP strictly between 0 and 1 (a perfect detector with spoiled box
    sizes), through the library function that tools/test.py calls."""
    import shutil

    from bbavectors.inference.predictor import Predictor
    from bbavectors.inference.runner import InferenceOptions, run_inference

    root = Path(shutil.copytree(data, tmp_path / "data"))
    cfg = tiny_config(root)
    _corrupt_first(root, 2)
    val = _val_set(root)
    model = perfect_model(val, cfg, wh_noise=1.5)
    loader = build_dataloader(val, batch_size=2, shuffle=False, workers=0)
    result = run_validation(model, loader, cfg, SYNTHETIC, val.ground_truth(), torch.device("cpu"),
                            progress=False)
    assert 0.05 < result.task1.map07 < 0.95
    predictor = Predictor(model, cfg, SYNTHETIC, device="cpu", batch_size=2)
    summary = run_inference(predictor, InferenceOptions(
        images=root / "images", out=tmp_path / "out", split=root / "val.txt", eval_labels=root / "labelTxt",
        workers=0, progress=False))
    assert summary.eval_result is not None and summary.unreadable == result.unreadable
    assert summary.eval_result.map07 == result.task1.map07
    assert summary.eval_result.map_area == result.task1.map_area


# ------------------------------------------------------------------------------------- pictures
def test_regression_pictures_of_huge_images_are_downsized_before_drawing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10: the full-resolution side-by-side picture of a 20000 px validation image went to
    TensorBoard (22.8 GB resident). Pictures are downsized before anything is drawn or joined."""
    side = 5000
    image = np.zeros((side, side, 3), np.uint8)
    box = [1000.0, 1000.0, 3000.0, 1000.0, 3000.0, 2000.0, 1000.0, 2000.0]
    truth = LabelFile([DotaObject(np.array(box), "plane", 0)])
    dets = {"polygons": np.array([box]), "scores": np.array([0.9]), "classes": np.array([0])}
    canvases: list[tuple[int, ...]] = []
    original = drawing.cv2.polylines

    def spy(canvas, *args, **kwargs):  # type: ignore[no-untyped-def]
        canvases.append(canvas.shape)
        return original(canvas, *args, **kwargs)

    monkeypatch.setattr(drawing.cv2, "polylines", spy)
    picture = prediction_picture(image, dets, SYNTHETIC, 0.3, truth)
    assert max(picture.shape[:2]) <= drawing.MAX_PICTURE_SIDE
    assert canvases and all(max(s[:2]) <= drawing.MAX_PICTURE_SIDE // 2 for s in canvases)
    alone = prediction_picture(image, dets, SYNTHETIC)
    assert alone.shape == (drawing.MAX_PICTURE_SIDE, drawing.MAX_PICTURE_SIDE, 3)
    # The box is drawn where it belongs in the smaller picture (scale 1600 / 5000).
    colour = np.array(drawing.class_colors(len(SYNTHETIC))[0], np.uint8)
    assert (alone[320, 320:960] == colour).all(axis=-1).mean() > 0.9
    written = save_picture(tmp_path / "p.png", image)
    assert read_image(written).shape == (drawing.MAX_PICTURE_SIDE, drawing.MAX_PICTURE_SIDE, 3)
