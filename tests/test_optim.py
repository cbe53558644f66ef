"""Optimiser, learning-rate schedule, EMA, AMP choice, torchrun environment, metrics log, run folders."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from bbavectors import runtime as runtime_module
from bbavectors.config import TrainConfig
from bbavectors.engine.distributed import DistInfo, read_dist_env
from bbavectors.engine.ema import ModelEMA
from bbavectors.engine.metrics_log import MetricsLogger, read_metrics
from bbavectors.engine.optim import (
    WarmupSchedule,
    build_optimizer,
    build_scheduler,
    effective_lr,
    parameter_groups,
)
from bbavectors.engine.trainer import create_run_dir
from bbavectors.runtime import resolve_amp


def _tiny_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


# ------------------------------------------------------------------------------------ lr scaling
def test_effective_lr_scales_linearly_with_the_global_batch() -> None:
    cfg = TrainConfig(lr=1e-3, base_batch_size=16)
    assert effective_lr(cfg, 16) == pytest.approx(1e-3)
    assert effective_lr(cfg, 64) == pytest.approx(4e-3)  # 4 GPUs x 16
    assert effective_lr(cfg, 8) == pytest.approx(5e-4)
    with pytest.raises(ValueError, match="positive"):
        effective_lr(cfg, 0)


def test_build_optimizer_uses_the_scaled_lr_and_decays_only_weights() -> None:
    model = _tiny_model()
    cfg = TrainConfig(lr=2e-4, base_batch_size=8, weight_decay=0.05, optimizer="adamw")
    opt = build_optimizer(model, cfg, global_batch=32)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.param_groups[0]["lr"] == pytest.approx(8e-4)
    decayed, plain = opt.param_groups
    # conv weights (4D) decay; conv biases and BatchNorm weight / bias do not.
    assert {tuple(p.shape) for p in decayed["params"]} == {(4, 3, 3, 3), (2, 4, 1, 1)}
    assert decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
    assert len(plain["params"]) == 4
    assert isinstance(build_optimizer(model, TrainConfig(optimizer="adam"), 16), torch.optim.Adam)


def test_frozen_parameters_are_left_out_and_unknown_optimizer_is_an_error() -> None:
    model = _tiny_model()
    model[0].weight.requires_grad_(False)
    groups = parameter_groups(model, 0.1)
    assert all(p.requires_grad for g in groups for p in g["params"])  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="train.optimizer"):
        build_optimizer(model, TrainConfig(optimizer="sgd"), 16)


# -------------------------------------------------------------------------------------- schedule
def test_warmup_is_linear_and_never_zero() -> None:
    s = WarmupSchedule(total_steps=100, warmup_steps=4, steps_per_epoch=10, schedule="constant")
    assert [s(i) for i in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def test_cosine_hand_values() -> None:
    s = WarmupSchedule(total_steps=110, warmup_steps=10, steps_per_epoch=10, schedule="cosine",
                       final_factor=0.0)
    assert s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.5)  # half-way through the 100 decay steps
    assert s(35) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert s(110) == pytest.approx(0.0, abs=1e-12)
    f = WarmupSchedule(total_steps=110, warmup_steps=10, steps_per_epoch=10, final_factor=0.01)
    assert f(110) == pytest.approx(0.01) and f(60) == pytest.approx(0.505)


def test_exponential_is_gamma_per_epoch_after_warmup() -> None:
    s = WarmupSchedule(total_steps=1000, warmup_steps=5, steps_per_epoch=20, schedule="exponential",
                       gamma=0.9)
    assert s(5) == pytest.approx(1.0)
    assert s(25) == pytest.approx(0.9)  # one epoch later
    assert s(45) == pytest.approx(0.81)
    assert s(15) == pytest.approx(0.9 ** 0.5)  # smooth within an epoch


def test_bad_schedule_values_raise() -> None:
    with pytest.raises(ValueError, match="train.schedule"):
        WarmupSchedule(total_steps=10, warmup_steps=0, steps_per_epoch=1, schedule="linear")
    with pytest.raises(ValueError, match="positive"):
        WarmupSchedule(total_steps=0, warmup_steps=0, steps_per_epoch=1)
    with pytest.raises(ValueError, match="gamma"):
        WarmupSchedule(total_steps=10, warmup_steps=0, steps_per_epoch=1, schedule="exponential", gamma=1.5)


def test_scheduler_drives_the_optimizer_per_step_and_resumes_from_a_weights_only_state() -> None:
    model = _tiny_model()
    cfg = TrainConfig(lr=1e-3, base_batch_size=16, epochs=3, warmup_epochs=1.0, schedule="cosine")
    opt = build_optimizer(model, cfg, 16)
    sched = build_scheduler(opt, cfg, steps_per_epoch=4)
    expected = WarmupSchedule(total_steps=12, warmup_steps=4, steps_per_epoch=4)
    seen = []
    for step in range(12):
        seen.append(opt.param_groups[0]["lr"])
        assert seen[-1] == pytest.approx(1e-3 * expected(step))
        opt.step()
        sched.step()
        if step == 5:
            buf = io.BytesIO()
            torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    # A fresh optimizer + scheduler restored from the step-5 state continue on the same curve.
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    opt2 = build_optimizer(model, cfg, 16)
    sched2 = build_scheduler(opt2, cfg, steps_per_epoch=4)
    opt2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["sched"])
    for step in range(6, 12):
        assert opt2.param_groups[0]["lr"] == pytest.approx(seen[step])
        opt2.step()
        sched2.step()


# ------------------------------------------------------------------------------------------- EMA
def test_ema_hand_values_and_integer_buffers() -> None:
    model = nn.BatchNorm1d(1)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = ModelEMA(model, decay=0.5, ramp=1)
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.num_batches_tracked.fill_(7)
    d = 0.5 * (1 - math.exp(-1.0))  # first update: updates + 1 = 1, ramp 1
    assert ema.current_decay() == pytest.approx(d)
    ema.update(model)
    assert ema.module.weight.item() == pytest.approx(d * 1.0 + (1 - d) * 3.0)
    assert int(ema.module.num_batches_tracked) == 7
    assert not any(p.requires_grad for p in ema.module.parameters())
    with pytest.raises(ValueError, match="ema_decay"):
        ModelEMA(model, decay=1.0)


def test_ema_state_round_trip() -> None:
    model = _tiny_model()
    ema = ModelEMA(model, decay=0.9)
    ema.update(model)
    other = ModelEMA(_tiny_model(), decay=0.9)
    other.load_state_dict(ema.state_dict(), ema.updates)
    assert other.updates == 1
    for a, b in zip(ema.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------- AMP
def test_resolve_amp(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert resolve_amp("none", cpu) == (None, False)
    assert resolve_amp("fp16", cpu) == (torch.float16, True)
    monkeypatch.setattr(runtime_module, "cpu_has_bf16", lambda: True)
    assert resolve_amp("BF16", cpu) == (torch.bfloat16, False)
    # A CPU without native bf16 trains in float32 (bf16 emulation would be slower).
    monkeypatch.setattr(runtime_module, "cpu_has_bf16", lambda: False)
    assert resolve_amp("bf16", cpu) == (None, False)
    with pytest.raises(ValueError, match="amp must be one of"):
        resolve_amp("fp8", cpu)


# ----------------------------------------------------------------------------------- torchrun env
def test_read_dist_env() -> None:
    assert read_dist_env({}) == DistInfo(0, 0, 1)
    info = read_dist_env({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"})
    assert info == DistInfo(3, 1, 4) and info.distributed and not info.is_main
    with pytest.raises(ValueError, match="inconsistent"):
        read_dist_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="not an integer"):
        read_dist_env({"WORLD_SIZE": "two"})


# ----------------------------------------------------------------------------------- metrics log
def test_metrics_log_writes_strict_json_lines_and_truncates_on_resume(tmp_path: Path) -> None:
    log = MetricsLogger(tmp_path, tensorboard=False)
    log.log("train", 10, 1, {"loss": 1.5, "hm": float("nan"), "lr": torch.tensor(0.5)})
    log.log("train", 20, 1, {"loss": 1.0})
    log.log("val", 30, 2, {"map07": 0.25})
    log.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert first["kind"] == "train" and first["step"] == 10 and first["hm"] is None and first["lr"] == 0.5
    # A run resumed at step 20 drops what the interrupted run wrote after it.
    MetricsLogger(tmp_path, resume_step=20, tensorboard=False).close()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [10, 20]
    # Other ranks write nothing.
    MetricsLogger(tmp_path / "rank1", enabled=False).log("train", 1, 1, {"loss": 1.0})
    assert not (tmp_path / "rank1").exists()


def test_metrics_log_tensorboard_events(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path) as log:
        log.log("val", 5, 1, {"map07": 0.5})
        log.log_image("predictions/x", torch.zeros(8, 8, 3, dtype=torch.uint8).numpy(), 5)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


# ----------------------------------------------------------------------------------- run folders
def test_run_folders_are_never_reused(tmp_path: Path) -> None:
    a = create_run_dir(tmp_path, None, "resnet18_x")
    b = create_run_dir(tmp_path, None, "resnet18_x")
    assert (a.name, b.name) == ("resnet18_x", "resnet18_x_2")
    create_run_dir(tmp_path, "mine", "unused")
    with pytest.raises(FileExistsError, match="--resume"):
        create_run_dir(tmp_path, "mine", "unused")
