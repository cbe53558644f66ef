"""Real SAR ships (RBox-SSDD): a handful of images, overfitted from scratch through ``tools/train.py``
for a few dozen steps, are then found again by ``tools/test.py --eval`` (DOTA Task1 VOC07 AP >= 0.9).

This is the smallest end-to-end check on real data with real (arbitrary) angles: label parsing,
letterbox, target encoding, loss, optimiser, checkpoint, decode and evaluation must all agree on
the geometry for AP07 to reach 0.9. Seeded, augmentation off, one thread.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tool_loader import load_tool as _load_tool

REPO = Path(__file__).resolve().parents[1]
#: 5 ships in 3 images (1, 1, 3), long sides 48 to 92 px in images of about 500 x 350.
IMAGE_IDS = ("000002", "000003", "000006")
#: One step per epoch: every step sees the 3 images. Measured: AP07 1.0 with 5 detections for seeds
#: 0 and 1 at 160 px; shuffled copies of the images (3 random ones per step) reached only 0.75.
STEPS = 60




def _copy_subset(shared_data: Path, dst: Path) -> Path:
    src = shared_data / "ssdd_rbox_train"
    (dst / "images").mkdir(parents=True)
    (dst / "labelTxt").mkdir()
    for image_id in IMAGE_IDS:
        shutil.copy(src / "images" / f"{image_id}.jpg", dst / "images")
        shutil.copy(src / "labelTxt" / f"{image_id}.txt", dst / "labelTxt")
    (dst / "trainval.txt").write_text("\n".join(IMAGE_IDS) + "\n", encoding="utf-8")
    return dst


def test_overfit_a_few_real_ssdd_images_finds_their_ships(shared_data: Path, tmp_path: Path) -> None:
    data = _copy_subset(shared_data, tmp_path / "ssdd4")
    train_tool, test_tool = _load_tool("train"), _load_tool("test")
    no_augment = ["augment.hflip=0", "augment.vflip=0", "augment.rot90=0", "augment.rotate=0",
                  "augment.scale_min=1", "augment.scale_max=1", "augment.color_jitter=0"]
    args = ["--data", str(data), "--classes", "hrsc2016", "--backbone", "resnet18", "--head-width", "32",
            "--input-size", "160", "--batch-size", "3", "--epochs", str(STEPS), "--lr", "3e-3",
            "--workers", "0", "--device", "cpu", "--amp", "none", "--seed", "0", "--threads", "1",
            "--runs-dir", str(tmp_path / "runs"), "--name", "overfit", "--quiet",
            "--set", "train.base_batch_size=3", "train.warmup_epochs=3", "train.val_every=1000",
            "data.train_split=trainval", "data.val_split=none", *no_augment]
    assert train_tool.main(args) == 0
    out = tmp_path / "test"
    assert test_tool.main(["--checkpoint", str(tmp_path / "runs" / "overfit" / "last.pt"),
                           "--images", str(data / "images"), "--split", str(data / "trainval.txt"),
                           "--out", str(out), "--eval", str(data / "labelTxt"),
                           "--device", "cpu", "--workers", "0", "--score-thresh", "0.05", "--quiet"]) == 0
    result = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert result["map07"] >= 0.9, result
