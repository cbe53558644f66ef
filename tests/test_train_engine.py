"""The training engine on a tiny synthetic set: the loss falls, non-finite steps are skipped and
counted, AMP paths run, validation scores a perfect model 1.0 through the letterbox inverse, pictures.

Tiny settings keep this fast on 2 CPU cores: torchvision's mobilenet_v2 trunk (3.4M parameters, 3x
faster per step than resnet18 here, where the optimiser step over resnet18's 11M parameters costs more
than its forward; torchvision, because timm is an optional extra) with 16-wide heads at 64 px input,
one torch thread (robust when other jobs share the cores).
``make_tiny_dataset`` / ``tiny_config`` are shared with test_resume, test_distributed, test_train_cli.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from bbavectors.checkpoint import load_checkpoint, model_from_checkpoint
from bbavectors.config import Config, apply_overrides
from bbavectors.data.dataset import DotaDataset
from bbavectors.data.loader import build_dataloader
from bbavectors.data.synthetic import make_synthetic_dataset
from bbavectors.engine.distributed import DistInfo
from bbavectors.engine.draw import PANEL_GAP, prediction_picture
from bbavectors.engine.trainer import NonFiniteLossError, Trainer
from bbavectors.engine.validate import DetectionAccumulator, run_validation
from bbavectors.roundtrip import ideal_outputs
from bbavectors.targets import encode_targets
from bbavectors.visualize import class_colors
from DOTA_devkit.classes import SYNTHETIC

#: Images of 96 px letterboxed into 64 px inputs: the letterbox scale (2/3) is exercised everywhere.
TINY_IMAGE = 96
TINY_INPUT = 64
TINY_BACKBONE = "mobilenet_v2"


def make_tiny_dataset(root: Path, num_images: int = 16, seed: int = 3) -> Path:
    """A few 96 px synthetic images with 2-4 objects of 20-40 px; trainval / val split files."""
    return make_synthetic_dataset(root, num_images, seed, image_size=TINY_IMAGE, progress=False,
                                  num_objects=(2, 4), size_range=(20.0, 40.0), val_fraction=0.25,
                                  test_fraction=0.0, border_fraction=0.0, difficult_fraction=0.0)


def tiny_config(root: Path, *overrides: str) -> Config:
    """mobilenet_v2 / 16-wide heads / 64 px / batch 4 / float32 on CPU, then ``overrides``."""
    base = [
        f"data.root={root}", "data.classes=synthetic", f"data.input_size={TINY_INPUT}", "data.workers=0",
        f"model.backbone={TINY_BACKBONE}", "model.head_width=16", "train.batch_size=4",
        "train.base_batch_size=4",
        "train.epochs=2", "train.lr=0.002", "train.amp=none", "train.device=cpu", "train.val_every=1",
        "train.warmup_epochs=0", "decode.top_k=50",
    ]
    return apply_overrides(Config(name="tiny"), base + list(overrides))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny_data"))


def _trainer(root: Path, run_dir: Path, *overrides: str, **kwargs: Any) -> Trainer:
    return Trainer(tiny_config(root, *overrides), run_dir, dist_info=DistInfo(), progress=False, threads=1,
                   **kwargs)


def _fixed_batch(trainer: Trainer) -> dict[str, Any]:
    return next(iter(trainer.train_loader))


def _weights(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -------------------------------------------------------------------------------- learning
def test_loss_falls_on_a_fixed_batch(tiny_data: Path, tmp_path: Path) -> None:
    trainer = _trainer(tiny_data, tmp_path, "augment.hflip=0", "augment.color_jitter=0",
                       "train.schedule=constant")
    batch = _fixed_batch(trainer)
    losses = [trainer.train_step(batch)["loss"] for _ in range(30)]
    trainer.close()
    assert all(math.isfinite(v) for v in losses)
    assert trainer.step == 30 and trainer.nonfinite_total == 0
    # From the hm prior (focal loss of a few units) the loss must drop well below its start.
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:2]), losses


def test_fit_runs_epochs_validates_and_checkpoints(tiny_data: Path, tmp_path: Path) -> None:
    events: list[str] = []
    trainer = _trainer(tiny_data, tmp_path, "train.ema=true", "train.ema_decay=0.9",
                       hook=lambda event, t: events.append(event))
    result = trainer.fit()
    trainer.close()
    assert result.epochs == 2 and result.steps == 2 * trainer.steps_per_epoch
    assert events.count("epoch") == 2 and events.count("validation") == 2 and events.count("checkpoint") == 2
    assert result.last_validation is not None and result.best_map07 is not None
    assert 0.0 <= result.best_map07 <= 1.0
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["step"] == result.steps and "ema" in ckpt and ckpt["ema_updates"] > 0
    assert ckpt["classes"] == list(SYNTHETIC)
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["best_map07"] == pytest.approx(result.best_map07)
    # The EMA weights are what a checkpoint's model is rebuilt with.
    model, cfg, classes = model_from_checkpoint(tmp_path / "last.pt")
    # Unconditional: a renamed key fails here (KeyError) instead of silently skipping the check.
    key = "heads.hm.0.weight"
    assert torch.equal(model.state_dict()[key], ckpt["ema"][key])
    assert not torch.equal(ckpt["ema"][key], ckpt["model"][key])  # the EMA really differs from the weights
    assert cfg.model.head_width == 16 and classes == list(SYNTHETIC)
    assert list((tmp_path / "predictions").glob("*.png"))


# ---------------------------------------------------------------------------- non-finite
def _nan_on(trainer: Trainer, bad_steps: set[int]) -> None:
    """Make the loss NaN (still attached to the graph) on the given step numbers."""
    original = trainer.criterion.forward

    def forward(outputs: dict[str, Tensor], targets: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        total, parts = original(outputs, targets)
        if trainer.step in bad_steps:
            total = total * float("nan")
        return total, parts

    trainer.criterion.forward = forward  # type: ignore[method-assign]


def test_nonfinite_steps_are_skipped_and_counted(tiny_data: Path, tmp_path: Path) -> None:
    trainer = _trainer(tiny_data, tmp_path)
    batch = _fixed_batch(trainer)
    _nan_on(trainer, {1, 2})
    trainer.train_step(batch)  # step 0: fine
    before = _weights(trainer.model)
    lr_before = trainer.optimizer.param_groups[0]["lr"]
    out = trainer.train_step(batch)  # step 1: NaN
    assert out["skipped"] == 1.0 and math.isnan(out["loss"])
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed on a skipped step"
    assert all(p.grad is None for p in trainer.model.parameters())
    trainer.train_step(batch)  # step 2: NaN
    assert (trainer.nonfinite_total, trainer.nonfinite_in_row) == (2, 2)
    trainer.train_step(batch)  # step 3: fine again, the run goes on
    assert (trainer.nonfinite_total, trainer.nonfinite_in_row) == (2, 0)
    assert trainer.step == 4  # skipped steps still advance the schedule
    assert trainer.optimizer.param_groups[0]["lr"] != lr_before or trainer.cfg.train.schedule == "constant"
    trainer.close()


def test_max_nonfinite_in_a_row_stops_with_a_clear_error(tiny_data: Path, tmp_path: Path) -> None:
    trainer = _trainer(tiny_data, tmp_path)
    assert trainer.cfg.train.max_nonfinite == 10
    batch = _fixed_batch(trainer)
    _nan_on(trainer, set(range(100)))
    for _ in range(9):
        trainer.train_step(batch)
    with pytest.raises(NonFiniteLossError, match=r"10 non-finite losses in a row .*Lower train.lr"):
        trainer.train_step(batch)
    trainer.close()


# ---------------------------------------------------------------------------------- AMP
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_steps_run_on_cpu(tiny_data: Path, tmp_path: Path, amp: str) -> None:
    trainer = _trainer(tiny_data, tmp_path, f"train.amp={amp}")
    batch = _fixed_batch(trainer)
    out = [trainer.train_step(batch) for _ in range(3)]
    assert all(math.isfinite(o["loss"]) for o in out)
    if amp == "fp16":
        assert trainer.scaler is not None and "scaler" in trainer.checkpoint_state()
    trainer.close()


# --------------------------------------------------------------------------- validation
class _PerfectModel(nn.Module):
    """Returns ideal logits for the images of one fixed validation batch (in loader order)."""

    def __init__(self, outputs: dict[str, Tensor]) -> None:
        super().__init__()
        self.outputs = outputs
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {k: v[: x.shape[0]].clone() for k, v in self.outputs.items()}


def test_validation_scores_a_perfect_model_one(tiny_data: Path) -> None:
    cfg = tiny_config(tiny_data)
    val = DotaDataset(tiny_data, "val", SYNTHETIC, TINY_INPUT)
    loader = build_dataloader(val, batch_size=len(val), shuffle=False, workers=0)
    batch = next(iter(loader))
    targets = encode_targets(batch["polygons"], batch["classes"], batch["difficult"], len(SYNTHETIC),
                             (TINY_INPUT, TINY_INPUT), cfg.targets)
    result = run_validation(_PerfectModel(ideal_outputs(targets)), loader, cfg, SYNTHETIC, val.ground_truth(),
                            torch.device("cpu"), keep_images=2, progress=False)
    # Detections were mapped back through the letterbox (96 px images, 64 px input) to match the labels.
    assert result.num_images == len(val) and len(result.samples) == 2
    assert result.task1.map07_present == pytest.approx(1.0)
    scalars = result.scalars()
    assert scalars["map07_present"] == pytest.approx(1.0) and "ap07/plane" in scalars


def test_validation_of_an_empty_model_is_zero(tiny_data: Path) -> None:
    cfg = tiny_config(tiny_data)
    val = DotaDataset(tiny_data, "val", SYNTHETIC, TINY_INPUT)
    loader = build_dataloader(val, batch_size=3, shuffle=False, workers=0)
    h = w = TINY_INPUT // 4
    silent = {"hm": torch.full((3, len(SYNTHETIC), h, w), -20.0), "wh": torch.zeros(3, 10, h, w),
              "reg": torch.zeros(3, 2, h, w), "cls_theta": torch.zeros(3, 1, h, w)}
    result = run_validation(_PerfectModel(silent), loader, cfg, SYNTHETIC, val.ground_truth(),
                            torch.device("cpu"), progress=False)
    assert result.map07 == 0.0 and all(len(d.scores) == 0 for d in result.detections.values())


def test_detection_accumulator_groups_by_class() -> None:
    acc = DetectionAccumulator(["a", "b", "c"], keep_images=1)
    square = np.array([0, 0, 4, 0, 4, 4, 0, 4], float)
    acc.add("img1", np.stack([square, square + 1]), np.array([0.9, 0.8]), np.array([2, 0]))
    acc.add("img2", np.zeros((0, 8)), np.zeros(0), np.zeros(0, np.int64))
    out = acc.result()
    assert out["a"].image_ids == ["img1"] and out["a"].scores.tolist() == [0.8]
    assert np.array_equal(out["c"].polygons[0], square) and len(out["b"].scores) == 0
    assert acc.image_ids == ["img1", "img2"] and list(acc.kept) == ["img1"]


# ------------------------------------------------------------------------------ pictures
def test_prediction_picture_shows_truth_and_predictions_in_class_colours(tiny_data: Path) -> None:
    val = DotaDataset(tiny_data, "val", SYNTHETIC, TINY_INPUT)
    truth = val.label_file(0)
    image = np.zeros((TINY_IMAGE, TINY_IMAGE, 3), np.uint8)
    dets = {"polygons": np.array([[10, 10, 50, 10, 50, 30, 10, 30]], float), "scores": np.array([0.9]),
            "classes": np.array([1])}
    alone = prediction_picture(image, dets, SYNTHETIC)
    assert alone.shape == image.shape
    ship = np.array(class_colors(len(SYNTHETIC))[1], np.uint8)
    assert (alone == ship).all(axis=-1).any()
    both = prediction_picture(image, dets, SYNTHETIC, ground_truth=truth)
    assert both.shape[1] == 2 * TINY_IMAGE + PANEL_GAP and both.shape[0] > TINY_IMAGE
    # Below the threshold nothing is drawn.
    assert not prediction_picture(image, dets, SYNTHETIC, score_thresh=0.95).any()
