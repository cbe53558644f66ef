"""``train.whole_images_at``: windows (``augment.crop_size``) for the first part of a run, whole canvases
after it; checked settings, the switch at the right epoch (batches, checkpoint, config.yaml, metrics),
and a resumed run that continues on whole canvases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_train_engine import TINY_INPUT, _trainer, make_tiny_dataset

from bbavectors.checkpoint import load_checkpoint
from bbavectors.config import Config, ConfigError, apply_overrides, load_config, validate_config
from bbavectors.engine.trainer import Trainer

WINDOW = 32


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="whole_images_at must be in"):
        validate_config(apply_overrides(Config(), ["augment.crop_size=320", "train.whole_images_at=1"]))
    with pytest.raises(ConfigError, match="whole_images_at must be in"):
        validate_config(apply_overrides(Config(), ["augment.crop_size=320", "train.whole_images_at=-0.1"]))
    with pytest.raises(ConfigError, match="needs augment.crop_size"):
        validate_config(apply_overrides(Config(), ["train.whole_images_at=0.5"]))
    validate_config(apply_overrides(Config(), ["augment.crop_size=320", "train.whole_images_at=0.8"]))


def _record_sides(trainer: Trainer, sides: list[tuple[int, int]]) -> None:
    step = trainer.train_step

    def recording(batch: dict[str, Any]) -> dict[str, float]:
        sides.append((trainer.epoch, int(batch["images"].shape[-1])))
        return step(batch)

    trainer.train_step = recording  # type: ignore[method-assign]


def test_windows_then_whole_canvases(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "data", num_images=8)
    run = tmp_path / "run"
    trainer = _trainer(root, run, "train.epochs=4", f"augment.crop_size={WINDOW}",
                       "train.whole_images_at=0.5", "data.workers=1", "train.calibrate_centres=false")
    sides: list[tuple[int, int]] = []
    _record_sides(trainer, sides)
    trainer.fit()
    trainer.close()
    # Switched after epoch 2 of 4 (0.5 of the planned epochs), in the loader's worker process too.
    assert {side for epoch, side in sides if epoch < 2} == {WINDOW}
    assert {side for epoch, side in sides if epoch >= 2} == {TINY_INPUT}
    assert trainer.whole_images and trainer.cfg.augment.crop_size is None
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["whole_images"] is True and ckpt["config"]["augment"]["crop_size"] is None
    assert load_config(run / "config.yaml").augment.crop_size is None
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    switches = [r for r in records if r["kind"] == "whole_images"]
    assert len(switches) == 1 and switches[0]["epoch"] == 2 and switches[0]["crop_size_before"] == WINDOW


def test_off_by_default_keeps_the_windows(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "data", num_images=8)
    trainer = _trainer(root, tmp_path / "run", "train.epochs=2", f"augment.crop_size={WINDOW}",
                       "train.calibrate_centres=false")
    sides: list[tuple[int, int]] = []
    _record_sides(trainer, sides)
    trainer.fit()
    trainer.close()
    assert {side for _, side in sides} == {WINDOW} and not trainer.whole_images
    assert load_checkpoint(tmp_path / "run" / "last.pt")["whole_images"] is False


def test_resumed_run_continues_on_whole_canvases(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "data", num_images=8)
    first = _trainer(root, tmp_path / "a", "train.epochs=4", f"augment.crop_size={WINDOW}",
                     "train.whole_images_at=0.25", "train.calibrate_centres=false")
    first.fit()
    first.close()
    # A continuation built from the original settings (windows) still trains on whole canvases.
    resumed = _trainer(root, tmp_path / "b", "train.epochs=5", f"augment.crop_size={WINDOW}",
                       "train.whole_images_at=0.25", "train.calibrate_centres=false",
                       resume=tmp_path / "a" / "last.pt")
    sides: list[tuple[int, int]] = []
    _record_sides(resumed, sides)
    resumed.fit()
    resumed.close()
    assert resumed.whole_images and {side for _, side in sides} == {TINY_INPUT}
