"""Accuracy benchmark (``bbavectors.benchmarks.accuracy``): YOLO-OBB results become Task1 detections
scored by the same evaluator as ours (fake result arrays, no Ultralytics needed), the table and the
settings checks; then tiny end-to-end runs on real SSDD images (ours; YOLO when installed)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from tool_loader import load_tool as _load_tool

from bbavectors.benchmarks.accuracy import (
    AccuracyResult,
    AccuracySettings,
    HardwareInfo,
    ModelScore,
    collect_task1,
    format_accuracy_table,
    score_predictions,
    yolo_obb_to_detections,
)

REPO = Path(__file__).resolve().parents[1]
SHIP = {0: "ship"}




def _box(x: float, y: float, w: float, h: float) -> list[list[float]]:
    """Axis-aligned box as YOLO's (4, 2) corners, clockwise on screen from the top left."""
    return [[x, y], [x + w, y], [x + w, y + h], [x, y + h]]


def test_yolo_corners_become_our_polygons_and_class_indices() -> None:
    corners = np.array([_box(10, 20, 30, 8), _box(0, 0, 4, 4)], dtype=np.float32)  # (2, 4, 2)
    dets = yolo_obb_to_detections(corners, np.array([0.9, 0.2]), np.array([1.0, 0.0]),
                                  {0: "ship", 1: "plane"}, ("plane", "ship"))
    assert dets["polygons"].shape == (2, 8)
    assert dets["polygons"][0].tolist() == [10, 20, 40, 20, 40, 28, 10, 28]  # x1 y1 ... x4 y4
    assert dets["classes"].tolist() == [0, 1]  # YOLO's 1 = plane = our 0; YOLO's 0 = ship = our 1
    assert dets["scores"].dtype == torch.float32
    assert torch.allclose(dets["scores"], torch.tensor([0.9, 0.2]))


def test_yolo_empty_result_is_no_detection() -> None:
    dets = yolo_obb_to_detections(np.zeros((0, 4, 2)), np.zeros(0), np.zeros(0), SHIP, ("ship",))
    assert dets["polygons"].shape == (0, 8) and len(dets["scores"]) == 0


def test_yolo_class_outside_the_class_list_is_rejected() -> None:
    with pytest.raises(ValueError, match="not in the class list"):
        yolo_obb_to_detections(np.array([_box(0, 0, 4, 4)]), [0.5], [3], SHIP, ("ship",))


def test_yolo_inconsistent_lengths_are_rejected() -> None:
    with pytest.raises(ValueError, match="2 boxes, 1 scores"):
        yolo_obb_to_detections(np.array([_box(0, 0, 4, 4)] * 2), [0.5], [0, 0], SHIP, ("ship",))


def _write_labels(label_dir: Path) -> None:
    label_dir.mkdir()
    (label_dir / "a.txt").write_text("10 20 40 20 40 28 10 28 ship 0\n", encoding="utf-8")
    (label_dir / "b.txt").write_text("100 100 120 100 120 150 100 150 ship 0\n", encoding="utf-8")


def test_yolo_predictions_are_scored_by_the_task1_evaluator(tmp_path: Path) -> None:
    """Two ships; a false positive (0.9) ranks above both hits (0.8, 0.7): precision 1/2 at recall
    1/2 and 2/3 at recall 1, so every VOC07 recall point takes 2/3: AP07 = 2/3 (hand-derived)."""
    _write_labels(tmp_path / "labelTxt")
    per_image = [
        ("a", yolo_obb_to_detections(np.array([_box(10, 20, 30, 8), _box(200, 200, 10, 10)]),
                                     [0.8, 0.9], [0, 0], SHIP, ("ship",))),
        ("b", yolo_obb_to_detections(np.array([_box(100, 100, 20, 50)]), [0.7], [0], SHIP, ("ship",))),
    ]
    result = score_predictions(per_image, ("ship",), tmp_path / "labelTxt", ["a", "b"])
    assert result.map07 == pytest.approx(2 / 3)
    task1 = collect_task1(per_image, ("ship",))
    assert sorted(task1["ship"].image_ids) == ["a", "a", "b"]


def test_perfect_yolo_predictions_score_one(tmp_path: Path) -> None:
    _write_labels(tmp_path / "labelTxt")
    boxes = {"a": _box(10, 20, 30, 8), "b": _box(100, 100, 20, 50)}
    per_image = [(k, yolo_obb_to_detections(np.array([b]), [0.5], [0], SHIP, ("ship",)))
                 for k, b in boxes.items()]
    result = score_predictions(per_image, ("ship",), tmp_path / "labelTxt", ["a", "b"])
    assert result.map07 == pytest.approx(1.0) and result.map_area == pytest.approx(1.0)
    assert result.mean_recall_present == pytest.approx(1.0)
    # One of the two ships found: recall 0.5, under the 0.9 level, so AP07 loses it and the 1.0 level.
    half = score_predictions(per_image[:1], ("ship",), tmp_path / "labelTxt", ["a", "b"])
    assert half.mean_recall_present == pytest.approx(0.5) and half.map07 == pytest.approx(6 / 11)



def test_mean_recall_without_ground_truth_is_none_not_nan() -> None:
    from DOTA_devkit.eval import ClassResult, Task1Result

    empty = Task1Result(("ship",), {"ship": ClassResult(0.0, 0.0, 0, 3, math.nan)})
    assert empty.mean_recall_present is None
    row = ModelScore(model="m", recall=empty.mean_recall_present)
    assert json.loads(json.dumps(dataclasses.asdict(row), allow_nan=False))["recall"] is None


def test_table_shows_numbers_skips_and_hardware() -> None:
    hardware = HardwareInfo(cpu="Test CPU", cores=2, threads=1, bf16=True, device="cpu", gpu=None,
                            torch="2.x", ultralytics=None, python="3.11")
    rows = [ModelScore(model="bbavectors resnet18 (w64)", params=13_050_000, budget_minutes=45.0,
                       train_seconds=2700.0, epochs=5.5, ap07=0.8123, ap_area=0.83, recall=0.9088,
                       ms_per_image=210.4, input_size=512),
            ModelScore(model="yolov8n-obb", skipped="ultralytics is not installed")]
    table = format_accuracy_table(AccuracyResult(rows, hardware, {}, 186, 379))
    assert ("| bbavectors resnet18 (w64) | 13.05 | 512 | 45 | 45.0 | 5.50 | 0.8123 | 0.8300 | 0.9088 "
            "| 210.4 | - |" in table)
    header, rule = table.splitlines()[:2]
    assert header.count("|") == rule.count("|") == table.splitlines()[2].count("|")
    assert "yolov8n-obb | skipped: ultralytics is not installed" in table
    assert "Test CPU, 2 cores, 1 thread(s), bf16 yes" in table and "186 images, 379 objects" in table


def _first_tool_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings_kw: object
                     ) -> tuple[list[str], Path]:
    """Run the benchmark on a one-image data folder, stopped at its first tool (our training):
    returns that tool's arguments and log path. Paths are relative to ``tmp_path``."""
    from bbavectors.benchmarks import accuracy

    data = tmp_path / "data"
    (data / "labelTxt").mkdir(parents=True)
    (data / "images").mkdir()
    cv2.imwrite(str(data / "images" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (data / "labelTxt" / "a.txt").write_text("", encoding="utf-8")
    (data / "val.txt").write_text("a\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    calls: list[tuple[list[str], Path]] = []

    def stop_at_the_first_tool(args: list[str], log_path: Path, what: str) -> str:
        calls.append((args, log_path))
        raise accuracy.BenchmarkError("stopped by the test")

    monkeypatch.setattr(accuracy, "_run_tool", stop_at_the_first_tool)
    settings = AccuracySettings(data=Path("data"), train_split=Path("data/val.txt"),
                                val_split=Path("data/val.txt"), work_dir=Path("work"), yolo_models=(),
                                **settings_kw)  # type: ignore[arg-type]
    with pytest.raises(accuracy.BenchmarkError, match="stopped by the test"):
        accuracy.run_accuracy_benchmark(settings)
    ((args, log_path),) = calls
    return args, log_path


def test_relative_paths_are_the_callers_not_the_repositorys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the tools run in the repository folder, so a relative ``--work-dir`` put the run
    there while the benchmark looked for its checkpoint in the caller's folder (after training)."""
    args, log_path = _first_tool_call(tmp_path, monkeypatch)
    assert args[args.index("--runs-dir") + 1] == str(tmp_path / "work" / "runs")
    assert args[args.index("--data") + 1] == str(tmp_path / "data")
    assert log_path == tmp_path / "work" / "logs" / "train_ours.log"


def test_our_precision_is_the_recipes_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: on the CPU the benchmark forced ``--amp none`` over the recipe's bf16, though bf16
    trained 2-2.5x faster on the 2-core CPUs with native bf16 where the recipe was measured."""
    args, _ = _first_tool_call(tmp_path / "default", monkeypatch)
    assert "--amp" not in args
    args, _ = _first_tool_call(tmp_path / "asked", monkeypatch, amp="none")
    assert args[args.index("--amp") + 1] == "none"


def test_regression_cli_set_takes_several_overrides_like_train(tmp_path: Path) -> None:
    """Regression: ``--set a=1 b=2`` was rejected ("unrecognized arguments: b=2") while
    ``tools/train.py`` takes it; both forms, and the flag repeated, now give every item in order."""
    tool = _load_tool("benchmark")
    args = tool.build_parser().parse_args(
        ["accuracy", "--data", str(tmp_path), "--train-split", "t.txt", "--val-split", "v.txt",
         "--work-dir", str(tmp_path), "--set", "loss.probiou_weight=1", "targets.gaussian_overlap=0.1",
         "--set", "model.head_width=32"])
    settings = tool._accuracy_settings(args)
    assert settings.overrides == ("loss.probiou_weight=1", "targets.gaussian_overlap=0.1",
                                  "model.head_width=32")


def test_settings_need_a_budget(tmp_path: Path) -> None:
    settings = AccuracySettings(data=tmp_path, train_split=tmp_path, val_split=tmp_path, work_dir=tmp_path,
                                minutes=None, max_epochs=None)
    with pytest.raises(ValueError, match="time budget"):
        settings.check()


def test_cli_missing_split_file_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tool = _load_tool("benchmark")
    (tmp_path / "labelTxt").mkdir()
    code = tool.main(["accuracy", "--data", str(tmp_path), "--train-split", str(tmp_path / "nope.txt"),
                      "--val-split", str(tmp_path / "nope.txt"), "--work-dir", str(tmp_path / "w")])
    assert code == 2
    err = capsys.readouterr().err
    assert "train_split not found" in err and "nope.txt" in err and "Traceback" not in err


# ------------------------------------------------------------------------ tiny real runs
def _tiny_ssdd(shared_data: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """8 SSDD images (4 train, 4 val) by reference: the benchmark reads the data folder in place."""
    src = shared_data / "ssdd_rbox_train"
    ids = sorted(p.stem for p in (src / "images").glob("*.jpg"))
    picked = random.Random(0).sample(ids, 8)
    train, val = tmp_path / "train.txt", tmp_path / "val.txt"
    train.write_text("\n".join(picked[:4]) + "\n", encoding="utf-8")
    val.write_text("\n".join(picked[4:]) + "\n", encoding="utf-8")
    return src, train, val


def _tiny_args(src: Path, train: Path, val: Path, work: Path) -> list[str]:
    return ["--data", str(src), "--train-split", str(train), "--val-split", str(val), "--work-dir", str(work),
            "--minutes", "0", "--max-epochs", "1", "--threads", "1", "--workers", "0", "--input-size", "128",
            "--batch-size", "2", "--warmup", "1", "--set", "model.head_width=16"]


def test_tiny_end_to_end_ours(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Epoch-capped (deterministic), then the same with a time budget (``tools/train.py --time``)."""
    src, train, val = _tiny_ssdd(shared_data, tmp_path)
    tool = _load_tool("benchmark")
    assert tool.main(["accuracy", *_tiny_args(src, train, val, tmp_path / "budget"), "--minutes", "0.25",
                      "--max-epochs", "3", "--yolo-models", "--no-onnx"]) == 0
    budget = json.loads((tmp_path / "budget" / "accuracy.json").read_text(encoding="utf-8"))
    assert budget["rows"][0]["budget_minutes"] == 0.25 and budget["rows"][0]["epochs"] > 0
    capsys.readouterr()
    assert tool.main(["accuracy", *_tiny_args(src, train, val, tmp_path / "work"), "--yolo-models"]) == 0
    out = capsys.readouterr().out
    # The row names the precision it was timed in (auto: bf16 where the CPU has it natively).
    assert "| bbavectors resnet18 (w16, " in out and "hardware:" in out
    data = json.loads((tmp_path / "work" / "accuracy.json").read_text(encoding="utf-8"))
    (row,) = data["rows"]
    assert row["epochs"] == pytest.approx(1.0) and row["input_size"] == 128
    assert 0.0 <= row["ap07"] <= 1.0 and row["ms_per_image"] > 0 and 0.0 <= row["recall"] <= 1.0
    # The exported graph scores as the PyTorch model (rounding may reorder near-equal scores).
    assert row["onnx_ms_per_image"] > 0 and row["onnx_ap07"] == pytest.approx(row["ap07"], abs=0.05)
    assert budget["rows"][0]["onnx_note"] == "not asked for (--no-onnx)"
    assert data["val_images"] == 4 and data["hardware"]["torch"] == torch.__version__

    # Re-timed and re-scored without training, in float32: same detections up to bf16 rounding.
    assert tool.main(["accuracy", *_tiny_args(src, train, val, tmp_path / "work"), "--yolo-models",
                      "--no-onnx", "--score-only", "--inference-amp", "none"]) == 0
    again = json.loads((tmp_path / "work" / "accuracy_rescored.json").read_text(encoding="utf-8"))
    (rescored,) = again["rows"]
    assert rescored["model"] == "bbavectors resnet18 (w16, float32)"
    assert rescored["ap07"] == pytest.approx(row["ap07"], abs=0.05) and rescored["epochs"] == row["epochs"]
    assert json.loads((tmp_path / "work" / "accuracy.json").read_text(encoding="utf-8")) == data
    # Nothing to score: a one-line error, exit 2.
    capsys.readouterr()
    assert tool.main(["accuracy", *_tiny_args(src, train, val, tmp_path / "empty"), "--yolo-models",
                      "--score-only"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_tiny_end_to_end_yolo(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("ultralytics is not installed (pip install -e \".[bench]\")")
    if not (REPO / "tools" / "convert_dataset.py").is_file():
        pytest.skip("tools/convert_dataset.py (DOTA -> YOLO-OBB) is not in this checkout yet")
    src, train, val = _tiny_ssdd(shared_data, tmp_path)
    tool = _load_tool("benchmark")
    args = ["accuracy", *_tiny_args(src, train, val, tmp_path / "work"), "--skip-ours",
            "--yolo-models", "yolov8n-obb.yaml"]
    assert tool.main(args) == 0
    data = json.loads((tmp_path / "work" / "accuracy.json").read_text(encoding="utf-8"))
    (row,) = data["rows"]
    assert row["model"] == "yolov8n-obb" and row["epochs"] == pytest.approx(1.0)
    assert 0.0 <= row["ap07"] <= 1.0 and row["ms_per_image"] > 0 and row["params"] > 1e6
    assert "yolov8n-obb" in capsys.readouterr().out
    # Its checkpoint re-timed and re-scored without training.
    assert tool.main([*args, "--score-only"]) == 0
    rescored_path = tmp_path / "work" / "accuracy_rescored.json"
    (rescored,) = json.loads(rescored_path.read_text(encoding="utf-8"))["rows"]
    assert rescored["model"] == "yolov8n-obb" and rescored["ap07"] == pytest.approx(row["ap07"])
    assert rescored["train_seconds"] is None


def test_yolo_optimizer_warning_names_the_slow_auto_choice_on_a_cpu_without_bf16() -> None:
    """Regression (twenty-seventh round): under a time budget Ultralytics' optimizer=auto took MuSGD,
    whose bf16 Newton-Schulz step made YOLOv8n-OBB 4x slower per iteration on a float32-only CPU."""
    from bbavectors.benchmarks.yolo_peer import yolo_optimizer_warning

    budgeted = AccuracySettings(data=Path("d"), train_split=Path("t"), val_split=Path("v"),
                                work_dir=Path("w"))
    message = yolo_optimizer_warning(budgeted, native_bf16=False)
    assert message is not None and "MuSGD" in message and "--yolo-optimizer AdamW" in message
    assert yolo_optimizer_warning(budgeted, native_bf16=True) is None
    assert yolo_optimizer_warning(dataclasses.replace(budgeted, yolo_optimizer="AdamW"), False) is None
    assert yolo_optimizer_warning(dataclasses.replace(budgeted, minutes=None, max_epochs=3), False) is None
    assert yolo_optimizer_warning(dataclasses.replace(budgeted, device="cuda"), False) is None


def test_benchmark_cli_passes_the_yolo_optimizer() -> None:
    tool = _load_tool("benchmark")
    args = tool.build_parser().parse_args(
        ["accuracy", "--data", "d", "--train-split", "t", "--val-split", "v", "--work-dir", "w",
         "--yolo-optimizer", "AdamW", "--yolo-lr0", "0.002"])
    settings = tool._accuracy_settings(args)
    assert (settings.yolo_optimizer, settings.yolo_lr0) == ("AdamW", 0.002)
    default = tool._accuracy_settings(tool.build_parser().parse_args(
        ["accuracy", "--data", "d", "--train-split", "t", "--val-split", "v", "--work-dir", "w"]))
    assert (default.yolo_optimizer, default.yolo_lr0) == ("auto", None)
