"""A run interrupted after a checkpoint and resumed ends like an uninterrupted one: same step count,
same learning rate, same weights (CPU, one thread, no loader workers: deterministic)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_train_engine import make_tiny_dataset, tiny_config

from bbavectors.checkpoint import load_checkpoint, save_checkpoint
from bbavectors.config import config_from_dict
from bbavectors.engine.distributed import DistInfo
from bbavectors.engine.metrics_log import read_metrics
from bbavectors.engine.trainer import Trainer


class _Interrupted(Exception):
    """Stands for a crash / kill right after a checkpoint was written."""


def _run(cfg_root: Path, run_dir: Path, resume: Path | None = None, stop_after_epoch: int | None = None,
         *overrides: str) -> Trainer:
    def hook(event: str, trainer: Trainer) -> None:
        if event == "checkpoint" and trainer.epoch == stop_after_epoch:
            raise _Interrupted

    if resume is not None:
        cfg = config_from_dict(load_checkpoint(resume)["config"])
    else:
        cfg = tiny_config(cfg_root, "train.epochs=3", "train.val_every=2", "train.warmup_epochs=1",
                          "train.ema=true", "train.ema_decay=0.9", *overrides)
    trainer = Trainer(cfg, run_dir, resume=resume, dist_info=DistInfo(), progress=False, hook=hook,
                      threads=1)
    try:
        trainer.fit()
    finally:
        trainer.close()
    return trainer


def test_resume_reaches_the_same_step_lr_and_weights(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "data")
    straight = _run(root, tmp_path / "straight")

    with pytest.raises(_Interrupted):
        _run(root, tmp_path / "broken", stop_after_epoch=1)
    ckpt = load_checkpoint(tmp_path / "broken" / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["step"] == straight.steps_per_epoch
    resumed = _run(root, tmp_path / "broken", resume=tmp_path / "broken" / "last.pt")

    assert resumed.step == straight.step == 3 * straight.steps_per_epoch
    assert resumed.epoch == straight.epoch == 3
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(straight.optimizer.param_groups[0]["lr"])
    assert resumed.scheduler.last_epoch == straight.scheduler.last_epoch
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=f"{k} differs after resume")
    assert resumed.ema is not None and straight.ema is not None
    assert resumed.ema.updates == straight.ema.updates
    assert resumed.best_map07 == pytest.approx(straight.best_map07)
    # The metrics file reads as one run: no step logged twice.
    steps = [r["step"] for r in read_metrics(tmp_path / "broken" / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == sorted(set(steps))


def test_resume_refuses_weights_only_and_other_class_checkpoints(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "data", num_images=8)
    cfg = tiny_config(root, "train.epochs=1")
    trainer = Trainer(cfg, tmp_path / "run", dist_info=DistInfo(), progress=False, threads=1)
    trainer.close()
    save_checkpoint(tmp_path / "weights.pt", trainer.model, cfg, trainer.classes)
    with pytest.raises(ValueError, match="cannot be resumed"):
        Trainer(cfg, tmp_path / "run", resume=tmp_path / "weights.pt", dist_info=DistInfo(), progress=False)
    save_checkpoint(tmp_path / "other.pt", trainer.model, cfg, ["a", "b", "c", "d", "e"],
                    **trainer.checkpoint_state())
    with pytest.raises(ValueError, match="trained on classes"):
        Trainer(cfg, tmp_path / "run", resume=tmp_path / "other.pt", dist_info=DistInfo(), progress=False)
