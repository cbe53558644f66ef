"""``tools/train.py``: one epoch on a tiny synthetic set writes the whole run folder, ``--resume``
continues it, bad overrides and taken run names are clear errors, the default is the quick schedule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_train_engine import make_tiny_dataset
from tool_loader import load_tool as _load_tool

from bbavectors.checkpoint import load_checkpoint
from bbavectors.config import load_config
from bbavectors.engine.metrics_log import read_metrics
from bbavectors.engine.trainer import QUICK_CONFIG, build_train_config

REPO = Path(__file__).resolve().parents[1]




train_tool = _load_tool("train")
benchmark_tool = _load_tool("benchmark")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("cli_data"))


def _tiny_args(root: Path, runs: Path, name: str) -> list[str]:
    return ["--data", str(root), "--classes", "synthetic", "--backbone", "resnet18", "--head-width", "16",
            "--input-size", "64", "--batch-size", "4", "--epochs", "1", "--workers", "0", "--device", "cpu",
            "--amp", "none", "--lr", "2e-3", "--name", name, "--runs-dir", str(runs), "--quiet",
            "--threads", "1",
            "--set", "train.val_every=1", "decode.top_k=50", "--set", "train.warmup_epochs=0"]


def test_one_epoch_writes_the_run_folder_then_resumes(tiny_root: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    assert train_tool.main(_tiny_args(tiny_root, runs, "t1")) == 0
    out = capsys.readouterr().out
    run = runs / "t1"
    assert "backbone: resnet18" in out and "head_width: 16" in out  # the resolved config, printed
    assert "plane" in out and "best VOC07 mAP" in out  # the per-class AP table
    cfg = load_config(run / "config.yaml")
    assert (cfg.model.head_width, cfg.data.input_size, cfg.train.lr) == (16, 64, 0.002)
    assert (cfg.train.val_every, cfg.decode.top_k, cfg.data.root) == (1, 50, str(tiny_root))
    for name in ("last.pt", "best.pt", "metrics.jsonl"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert list((run / "predictions").glob("*.png"))
    kinds = {r["kind"] for r in read_metrics(run / "metrics.jsonl")}
    assert kinds == {"train", "epoch", "val", "calibration"}  # calibration: after the last epoch
    first = load_checkpoint(run / "last.pt")
    assert first["epoch"] == 1

    # Continue the same run for one more epoch: same folder, step count continues.
    resume = ["--resume", str(run / "last.pt"), "--epochs", "2", "--quiet", "--threads", "1"]
    assert train_tool.main(resume) == 0
    second = load_checkpoint(run / "last.pt")
    assert second["epoch"] == 2 and second["step"] == 2 * first["step"]
    # More epochs on resume re-shape the schedule over the new length (the step count carries on).
    assert first["scheduler"]["lr_lambdas"][0]["total_steps"] == first["step"]
    assert second["scheduler"]["lr_lambdas"][0]["total_steps"] == second["step"]
    assert load_config(run / "config.yaml").train.epochs == 2
    assert sorted(p.name for p in runs.iterdir()) == ["t1"]

    # The name is taken: never overwritten.
    assert train_tool.main(_tiny_args(tiny_root, runs, "t1")) == 2
    assert "exists" in capsys.readouterr().err


def test_unknown_set_key_is_a_clear_error(tiny_root: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    rc = train_tool.main(["--data", str(tiny_root), "--runs-dir", str(runs), "--set", "train.lrr=1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "unknown key" in err and "lrr" in err
    assert not (tmp_path / "runs").exists()  # nothing created for a bad command
    assert train_tool.main(["--data", str(tiny_root), "--set", "nonsense"]) == 2
    assert "section.key=value" in capsys.readouterr().err


def test_flags_become_overrides() -> None:
    args = train_tool.parse_args(["--lr", "2e-3", "--ema", "--backbone", "timm:resnet10t",
                                  "--set", "a.b=1", "c.d=2"])
    items = train_tool.flag_overrides(args)
    assert items == ["model.backbone=timm:resnet10t", "train.lr=0.002", "train.ema=true", "a.b=1", "c.d=2"]


def test_default_is_the_quick_synthetic_schedule() -> None:
    assert QUICK_CONFIG.is_file()
    cfg = build_train_config(None, ["model.backbone=resnet18"], None)
    assert cfg.name == "synthetic_quick" and cfg.data.root is None and cfg.data.classes == "synthetic"
    assert cfg.model.pretrained is None  # no downloads: from scratch
    assert cfg.data.input_size <= 384 and cfg.train.epochs >= 1
    # With a data set (and no config) the built-in defaults apply, flags on top.
    real = build_train_config(None, ["train.epochs=3"], "some/data")
    assert real.name == "bbavectors" and real.data.root == "some/data" and real.train.epochs == 3
    # A config without a data set trains on the synthetic set: its classes follow.
    dota = build_train_config(REPO / "configs" / "dota_resnet18.yaml", [], None)
    assert dota.data.classes == "synthetic" and dota.model.backbone == "resnet18"


def test_train_benchmark_runs_with_tiny_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    rc = benchmark_tool.main(["train", "--device", "cpu", "--backbones", "mobilenet_v2", "--head-width", "16",
                              "--input-size", "64", "--batch-size", "2", "--steps", "1", "--windows", "2",
                              "--warmup", "1", "--workers", "0", "--num-images", "3", "--amp", "none",
                              "--data-dir", str(tmp_path / "patches"), "--json", str(out)])
    assert rc == 0
    table = capsys.readouterr().out
    assert "full/model-only" in table and "mobilenet_v2" in table and "torch " in table
    result = json.loads(out.read_text())
    (row,) = result["backbones"]
    assert row["model_only_img_s"] > 0 and row["full_img_s"] > 0 and len(row["windows"]["full"]) == 2
    assert row["full_over_model_only"] == pytest.approx(row["full_img_s"] / row["model_only_img_s"])
    # The generated patches: 600x600 PNG files with 50 objects each, reused by the next run.
    labels = sorted((tmp_path / "patches" / "labelTxt").glob("*.txt"))
    assert len(labels) == 3
    lines = labels[0].read_text().splitlines()
    objects = [line for line in lines if not line.startswith(("imagesource", "gsd"))]
    assert len(objects) > 40
