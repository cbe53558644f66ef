"""Named regression tests for training start-up and checkpoints (issue 10) and split files given by
path (issue 9): classes.txt of a custom data set, data without usable objects, an unreadable validation
split, last.pt before validation, stale temporaries, no empty run folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_train_engine import make_tiny_dataset, tiny_config
from tool_loader import load_tool

from bbavectors.checkpoint import load_checkpoint
from bbavectors.engine import train_state
from bbavectors.engine.distributed import DistInfo
from bbavectors.engine.run_setup import clean_stale_temporaries, prepare_run, resolve_classes
from bbavectors.engine.trainer import Trainer
from DOTA_devkit.classes import DOTA_V1_0, SYNTHETIC

REPO = Path(__file__).resolve().parents[1]



train_tool = load_tool("train")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("reg_data"), num_images=8)


def _copy(root: Path, dest: Path) -> Path:
    shutil.copytree(root, dest)
    return dest


def _args(root: Path, runs: Path, *extra: str) -> list[str]:
    return ["--data", str(root), "--backbone", "mobilenet_v2", "--head-width", "16", "--input-size", "64",
            "--batch-size", "4", "--epochs", "1", "--workers", "0", "--device", "cpu", "--amp", "none",
            "--runs-dir", str(runs), "--name", "r", "--quiet", "--threads", "1", *extra]


def test_regression_data_folder_classes_txt_is_used_without_classes(
        root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The tiny set's classes.txt holds the synthetic classes in its own order; dota1.0 would differ.
    assert (root / "classes.txt").is_file()
    with caplog.at_level("INFO"):
        assert resolve_classes("auto", root) == SYNTHETIC
    assert str(root / "classes.txt") in caplog.text
    # Without classes.txt: dota1.0, with a warning saying so.
    empty = tmp_path / "empty"
    empty.mkdir()
    with caplog.at_level("WARNING"):
        assert resolve_classes("auto", empty) == DOTA_V1_0
    assert "classes.txt does not exist" in caplog.text
    # The CLI without --classes trains on classes.txt's list.
    custom = _copy(root, tmp_path / "custom")
    (custom / "classes.txt").write_text("\n".join(reversed(SYNTHETIC)) + "\n")
    assert train_tool.main(_args(custom, tmp_path / "runs", "--set", "train.val_every=5")) == 0
    assert load_checkpoint(tmp_path / "runs" / "r" / "last.pt")["classes"] == list(reversed(SYNTHETIC))


def test_regression_no_usable_object_exits_2_without_a_run_folder(root: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data = _copy(root, tmp_path / "data")
    (data / "classes.txt").write_text("airship\n")  # every label line names an unknown class
    runs = tmp_path / "runs"
    assert train_tool.main(_args(data, runs)) == 2
    err = capsys.readouterr().err
    assert "no usable object" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not runs.exists()


def test_regression_many_skipped_objects_warn(root: Path, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    data = _copy(root, tmp_path / "data")
    (data / "classes.txt").write_text("plane\n")  # the other four classes' objects are skipped
    with caplog.at_level("WARNING"):
        trainer = Trainer(tiny_config(data, "data.classes=auto"), tmp_path / "run", dist_info=DistInfo(),
                          progress=False, threads=1)
    trainer.close()
    assert trainer.skipped_label_share > 0.2
    assert "of the objects were skipped" in caplog.text


def test_regression_unreadable_validation_split_fails_at_start(root: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    data = _copy(root, tmp_path / "data")
    val_ids = (data / "val.txt").read_text().split()
    for image in (data / "images").iterdir():
        if image.stem == val_ids[0]:
            image.write_bytes(b"not a PNG")
    runs = tmp_path / "runs"
    assert train_tool.main(_args(data, runs, "--classes", "synthetic")) == 2
    err = capsys.readouterr().err
    assert "validation split" in err and val_ids[0] in err and "Traceback" not in err
    assert not runs.exists()


def test_regression_last_pt_is_saved_before_validating(root: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("validation crashed")

    monkeypatch.setattr(train_state, "run_validation", broken)
    trainer = Trainer(tiny_config(root, "train.epochs=1"), tmp_path, dist_info=DistInfo(), progress=False,
                      threads=1)
    with pytest.raises(RuntimeError, match="validation crashed"):
        trainer.fit()
    trainer.close()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1  # the epoch's work survived


def test_regression_resume_removes_stale_temporaries(root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    trainer = Trainer(tiny_config(root, "train.epochs=1", "train.val_every=5"), run, dist_info=DistInfo(),
                      progress=False, threads=1)
    trainer.fit()
    trainer.close()
    stale = [run / ".last.pt.12345.tmp", run / ".metrics.jsonl.999.tmp", run / "config.yaml.tmp"]
    for path in stale:
        path.write_bytes(b"left by a killed write")
    keep = run / "notes.tmp"
    keep.write_text("not ours")
    prepared = prepare_run(None, [], None, tmp_path / "unused", resume=run / "last.pt")
    assert not any(p.exists() for p in stale) and keep.exists()
    assert prepared.resume_state is not None and prepared.resume_state["epoch"] == 1
    assert clean_stale_temporaries(run) == []


def test_split_files_given_by_path_outside_a_read_only_data_folder(root: Path, tmp_path: Path) -> None:
    ids = (root / "trainval.txt").read_text().split()
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "few.txt").write_text("\n".join(ids[:4]) + "\n")
    (splits / "check.txt").write_text(ids[-1] + "\n")
    data = _copy(root, tmp_path / "ro_data")
    for path in sorted(data.rglob("*"), reverse=True):
        path.chmod(0o555 if path.is_dir() else 0o444)
    data.chmod(0o555)
    try:
        trainer = Trainer(tiny_config(data, f"data.train_split={splits / 'few.txt'}",
                                      f"data.val_split={splits / 'check.txt'}"),
                          tmp_path / "run", dist_info=DistInfo(), progress=False, threads=1)
        trainer.close()
    finally:
        for path in [data, *data.rglob("*")]:
            path.chmod(0o755)
    assert trainer.train_set.image_ids == ids[:4]
    assert trainer.val_set is not None and trainer.val_set.image_ids == [ids[-1]]
    # The CLI flags are the same keys.
    parsed = train_tool.parse_args(["--train-split", "a.txt", "--val-split", "val2"])
    assert train_tool.flag_overrides(parsed) == ["data.train_split=a.txt", "data.val_split=val2"]
