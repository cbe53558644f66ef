"""Centre calibration (bbavectors.engine.calibrate): hand-made pairs, a lookup "network" whose boxes sit
a known offset from the labels (measured back exactly, then zero once applied), the decoder's shift
in every backend, and the trainer storing the shift in its checkpoint and config.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_one_path import LookupPerfectModel
from test_train_engine import _trainer, make_tiny_dataset

import bbavectors.engine.calibrate as calibrate
from bbavectors.checkpoint import load_checkpoint, model_from_checkpoint
from bbavectors.config import AugmentConfig, Config, ConfigError, apply_overrides, validate_config
from bbavectors.data.dataset import DotaDataset
from bbavectors.data.letterbox import normalize_images
from bbavectors.data.transforms import augment_sample
from bbavectors.decode import decode_topk
from bbavectors.engine.calibrate import (
    CentreCalibration,
    box_centres,
    calibration_items,
    centre_differences,
    measure_centre_offset,
)
from bbavectors.engine.trainer import Trainer
from bbavectors.inference.predictor import Predictor
from bbavectors.roundtrip import ideal_outputs
from bbavectors.targets import encode_targets
from DOTA_devkit.classes import SYNTHETIC

SQUARE = np.array([[0, 0, 10, 0, 10, 10, 0, 10]], float)


def test_box_centres_is_the_mean_of_the_corners() -> None:
    np.testing.assert_allclose(box_centres(SQUARE), [[5.0, 5.0]])
    kite = np.array([[0, 0, 4, 1, 6, 6, 2, 5]], float)
    np.testing.assert_allclose(box_centres(kite), [[3.0, 3.0]])


def test_centre_differences_pairs_each_label_with_its_best_confident_detection() -> None:
    labels = np.concatenate([SQUARE, SQUARE + 100.0])
    shifted = SQUARE + np.array([1.0, -2.0] * 4)  # IoU 0.64 with the first label
    far = SQUARE + 100.0 + np.array([8.0, 0.0] * 4)  # IoU 0.11 with the second: no pair
    d = centre_differences(labels, np.concatenate([shifted, far]), np.array([0.9, 0.9]))
    np.testing.assert_allclose(d, [[-1.0, 2.0]])  # label minus detection
    # Below the score threshold a detection pairs with nothing.
    assert centre_differences(labels, shifted, np.array([0.1])).shape == (0, 2)
    assert centre_differences(np.zeros((0, 8)), shifted, np.array([0.9])).shape == (0, 2)


def test_calibration_items_spread_over_the_split(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path, num_images=12)
    train = DotaDataset(root, "trainval", SYNTHETIC, 64)
    picked = calibration_items(train, 3)
    ids = [r.image_id for r in train.records]
    assert len(ids) == 9  # 12 images, a quarter for validation
    assert [i for i, _ in picked] == [ids[0], ids[4], ids[8]]
    assert len(calibration_items(train, 1000)) == len(ids)


def _shifted_lookup_model(data: DotaDataset, cfg: Config, shift: tuple[float, float]) -> LookupPerfectModel:
    """A perfect detector whose every box sits ``shift`` network-input pixels from its label."""
    table = {}
    offset = torch.tensor([shift[0], shift[1]] * 4)
    for i in range(len(data)):
        sample = data.load_sample(i)
        polygons = sample["polygons"] + offset
        targets = encode_targets([polygons], [sample["classes"]], [sample["difficult"]], len(SYNTHETIC),
                                 (cfg.data.input_size,) * 2, cfg.targets)
        key = normalize_images(sample["image"][None], cfg.data.mean, cfg.data.std)[0].numpy().tobytes()
        table[key] = ideal_outputs(targets)
    return LookupPerfectModel(table)


def test_measured_offset_is_the_models_shift_and_vanishes_once_applied(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calibrate, "MIN_MATCHES", 5)
    root = make_tiny_dataset(tmp_path, num_images=12)
    cfg = apply_overrides(Config(name="t"), [f"data.root={root}", "data.classes=synthetic",
                                             "data.input_size=64", "decode.top_k=50"])
    train = DotaDataset(root, "trainval", SYNTHETIC, 64)
    model = _shifted_lookup_model(train, cfg, (0.75, -0.5))
    items = calibration_items(train, 100)
    first = measure_centre_offset(Predictor(model, cfg, SYNTHETIC, batch_size=4), items, train.ground_truth(),
                                  SYNTHETIC)
    assert first.applied and first.matches >= 5 and first.images == len(items)
    # The labels sit (-0.75, +0.5) input px from the boxes: exactly, as the outputs decode exactly.
    assert first.offset == pytest.approx((-0.75, 0.5), abs=1e-3)
    assert first.spread == pytest.approx((0.0, 0.0), abs=1e-3)
    cfg.decode.centre_shift = first.offset
    again = measure_centre_offset(Predictor(model, cfg, SYNTHETIC, batch_size=4), items, train.ground_truth(),
                                  SYNTHETIC)
    assert again.offset == pytest.approx((0.0, 0.0), abs=1e-3)


def test_too_few_pairs_leave_the_shift_unchanged(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path, num_images=8)
    cfg = apply_overrides(Config(name="t"), [f"data.root={root}", "data.classes=synthetic",
                                             "data.input_size=64", "decode.top_k=50"])
    train = DotaDataset(root, "trainval", SYNTHETIC, 64)
    model = _shifted_lookup_model(train, cfg, (2.0, 2.0))
    result = measure_centre_offset(Predictor(model, cfg, SYNTHETIC), calibration_items(train, 100),
                                   train.ground_truth(), SYNTHETIC)
    assert 0 < result.matches < calibrate.MIN_MATCHES
    assert not result.applied and result.offset == (0.0, 0.0)
    assert "unchanged" in result.describe()


def test_decoder_adds_the_centre_shift_to_every_corner() -> None:
    gen = torch.Generator().manual_seed(1)
    outputs = {"hm": torch.randn(2, 3, 12, 16, generator=gen),
               "wh": torch.randn(2, 10, 12, 16, generator=gen),
               "reg": torch.rand(2, 2, 12, 16, generator=gen),
               "cls_theta": torch.randn(2, 1, 12, 16, generator=gen)}
    base, scores, classes = decode_topk(outputs, 20, 0.5)
    moved, scores2, classes2 = decode_topk(outputs, 20, 0.5, centre_shift=(1.5, -0.25))
    real = scores > 0
    expected = base + torch.tensor([1.5, -0.25] * 4)
    torch.testing.assert_close(moved[real], expected[real])
    assert torch.equal(scores, scores2) and torch.equal(classes, classes2)


def test_non_finite_centre_shift_is_rejected() -> None:
    with pytest.raises(ConfigError, match="decode.centre_shift"):
        validate_config(apply_overrides(Config(), ["decode.centre_shift=[.nan, 0]"]))
    with pytest.raises(ConfigError, match="centre_shift"):
        apply_overrides(Config(), ["decode.centre_shift=[1]"])


def test_trainer_stores_the_calibrated_shift_in_checkpoint_and_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tiny_dataset(tmp_path / "data")
    seen: list[tuple[float, float]] = []

    def fake(predictor: Predictor, items: list[tuple[str, Path]], *args: object, **kwargs: object
             ) -> CentreCalibration:
        seen.append(tuple(predictor.decode_cfg.centre_shift))  # type: ignore[arg-type]
        assert len(items) == 3  # train.calibration_images
        return CentreCalibration((0.5, -0.25), 150, 3, (1.0, 1.0), True, 0.1)

    monkeypatch.setattr(calibrate, "measure_centre_offset", fake)
    trainer = _trainer(root, tmp_path / "run", "train.epochs=1", "train.calibration_images=3",
                       "decode.centre_shift=[0.25, 0.25]")
    trainer.fit()
    trainer.close()
    assert seen == [(0.25, 0.25)]  # measured once, after the last epoch, on top of the shift in force
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["config"]["decode"]["centre_shift"] == [0.75, 0.0]
    _, cfg, _ = model_from_checkpoint(tmp_path / "run" / "last.pt")
    assert cfg.decode.centre_shift == (0.75, 0.0)
    assert "- 0.75" in (tmp_path / "run" / "config.yaml").read_text()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    calib = [r for r in records if r["kind"] == "calibration"]
    assert len(calib) == 1 and calib[0]["centre_shift_x"] == 0.75 and calib[0]["matches"] == 150


def test_calibration_off_runs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tiny_dataset(tmp_path / "data", num_images=8)

    def fail(*args: object, **kwargs: object) -> CentreCalibration:
        raise AssertionError("calibration ran with train.calibrate_centres=false")

    monkeypatch.setattr(calibrate, "measure_centre_offset", fail)
    trainer = _trainer(root, tmp_path / "run", "train.epochs=1", "train.calibrate_centres=false")
    trainer.fit()
    trainer.close()
    assert load_checkpoint(tmp_path / "run" / "last.pt")["config"]["decode"]["centre_shift"] == [0.0, 0.0]


def test_label_shift_moves_every_training_label_before_the_flips() -> None:
    image = np.zeros((256, 512, 3), np.uint8)  # letterbox scale 2 at 1024
    poly = np.array([[100.0, 100, 140, 100, 140, 120, 100, 120]])

    def augmented(shift: tuple[float, float]) -> np.ndarray:
        cfg = AugmentConfig(hflip=1.0, vflip=0.0, rot90=0.0, scale_min=1.0, scale_max=1.0, color_jitter=0.0,
                            label_shift=shift)
        rng = np.random.default_rng(0)
        return augment_sample(image, poly, np.zeros(1, np.int64), 1024, cfg, rng).polygons

    moved = augmented((1.0, -2.0)) - augmented((0.0, 0.0))
    # Input pixels (not original ones), and mirrored with the image: +1 px in x becomes -1 px.
    np.testing.assert_allclose(moved, [[-1.0, -2.0] * 4], atol=1e-9)


def test_label_shift_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="augment.label_shift"):
        validate_config(apply_overrides(Config(), ["augment.label_shift=[.inf, 0]"]))
    with pytest.raises(ConfigError, match="label_shift_at must be in"):
        validate_config(apply_overrides(Config(), ["train.label_shift_at=1"]))
    with pytest.raises(ConfigError, match="needs train.calibrate_centres"):
        validate_config(apply_overrides(Config(), ["train.label_shift_at=0.3",
                                                   "train.calibrate_centres=false"]))


def _first_batch_polygons(trainer: Trainer, shift: tuple[float, float]) -> list[torch.Tensor]:
    trainer.cfg.augment.label_shift = shift
    trainer.rebuild_train_loader()
    return list(next(iter(trainer.train_loader))["polygons"])


def test_mid_run_pass_moves_the_training_labels_once_and_the_decoder_gets_the_offset(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tiny_dataset(tmp_path / "data")
    seen: list[tuple[int, tuple[float, float], tuple[float, float]]] = []
    trainer_ref: list[Trainer] = []

    def fake(predictor: Predictor, items: list[tuple[str, Path]], *args: object, **kwargs: object
             ) -> CentreCalibration:
        tr = trainer_ref[0]
        seen.append((tr.epoch, tuple(predictor.decode_cfg.centre_shift),  # type: ignore[arg-type]
                     tuple(tr.cfg.augment.label_shift)))
        return CentreCalibration((0.5, -0.25), 150, 3, (1.0, 1.0), True, 0.1)

    monkeypatch.setattr(calibrate, "measure_centre_offset", fake)
    # No random geometry: the same seed then augments identically but for the shift. One worker: the
    # shift must reach the loader's worker processes, which hold their own copy of the data set.
    trainer = _trainer(root, tmp_path / "run", "train.epochs=3", "train.calibration_images=3",
                       "train.label_shift_at=0.3", "data.workers=1", "augment.hflip=0", "augment.vflip=0",
                       "augment.rot90=0", "augment.scale_min=1", "augment.scale_max=1",
                       "augment.color_jitter=0")
    trainer_ref.append(trainer)
    old_loader = trainer.train_loader
    trainer.fit()
    # Once mid-run (after the first of three epochs, before any shift), once at the end.
    assert seen == [(1, (0.0, 0.0), (0.0, 0.0)), (3, (0.0, 0.0), (-0.5, 0.25))]
    assert trainer.train_loader is not old_loader and trainer.labels_shifted
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["labels_shifted"] is True
    assert ckpt["config"]["augment"]["label_shift"] == [-0.5, 0.25]
    assert ckpt["config"]["decode"]["centre_shift"] == [0.5, -0.25]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    shifts = [r for r in records if r["kind"] == "label_shift"]
    assert len(shifts) == 1 and shifts[0]["label_shift_x"] == -0.5 and shifts[0]["epoch"] == 1
    # The workers of the rebuilt loader move every label by the shift.
    shifted = _first_batch_polygons(trainer, (-0.5, 0.25))
    plain = _first_batch_polygons(trainer, (0.0, 0.0))
    trainer.close()
    for a, b in zip(shifted, plain):
        torch.testing.assert_close(a - b, torch.tensor([-0.5, 0.25] * 4).expand_as(a), atol=1e-4, rtol=0)


def test_mid_run_pass_with_too_few_pairs_keeps_the_labels(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tiny_dataset(tmp_path / "data", num_images=8)
    calls: list[int] = []

    def fake(*args: object, **kwargs: object) -> CentreCalibration:
        calls.append(1)
        return CentreCalibration((0.0, 0.0), 3, 3, (0.0, 0.0), False, 0.1)

    monkeypatch.setattr(calibrate, "measure_centre_offset", fake)
    trainer = _trainer(root, tmp_path / "run", "train.epochs=6", "train.label_shift_at=0.1")
    trainer.fit()
    trainer.close()
    # Tried after epochs 1, 2 and 3 (LABEL_SHIFT_TRIES), then only the final calibration.
    assert len(calls) == 3 + 1
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["labels_shifted"] is False and ckpt["config"]["augment"]["label_shift"] == [0.0, 0.0]
