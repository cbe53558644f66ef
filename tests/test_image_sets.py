"""Stratified train / val / test splits: coverage, determinism, brute force, files, the CLI."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from tool_loader import load_tool as _load_tool

from DOTA_devkit.image_sets import (
    format_image_set_table,
    image_class_counts,
    make_image_set_files,
    make_image_sets,
    write_image_set_files,
)
from DOTA_devkit.labels import DotaObject, write_dota_label

REPO = Path(__file__).resolve().parents[1]




def _classes_in(ids: list[str], image_classes: dict[str, Counter[str]]) -> set[str]:
    return {c for i in ids for c, k in image_classes[i].items() if k > 0}


def _random_images(rng: np.random.Generator, n: int, k: int, p: float) -> dict[str, Counter[str]]:
    return {f"im{i:03d}": Counter({f"c{j}": int(rng.integers(1, 4)) for j in range(k) if rng.random() < p})
            for i in range(n)}


def _square(x: float) -> np.ndarray:
    return np.array([x, 0, x + 10, 0, x + 10, 10, x, 10], dtype=float)


def _make_dataset(root: Path, image_classes: dict[str, list[tuple[str, int]]]) -> None:
    """Image files (content irrelevant to splitting) + labelTxt with (class, difficult) objects."""
    (root / "images").mkdir(parents=True)
    (root / "labelTxt").mkdir()
    for image_id, objects in image_classes.items():
        (root / "images" / f"{image_id}.png").write_bytes(b"not decoded")
        write_dota_label(root / "labelTxt" / f"{image_id}.txt",
                         [DotaObject(_square(20 * k), c, d) for k, (c, d) in enumerate(objects)])


# -------------------------------------------------------------------------------- algorithm
def test_every_class_with_two_images_is_in_val_and_stays_in_training() -> None:
    rng = np.random.default_rng(5)
    images = _random_images(rng, 200, 12, 0.08)
    images["rare_a"] = Counter({"rare": 1})
    images["rare_b"] = Counter({"rare": 2, "c0": 1})
    images["single"] = Counter({"only": 3})
    s = make_image_sets(images, val=0.1, test=0.1, seed=0)
    every = _classes_in(list(images), images)
    assert _classes_in(s["trainval"], images) == every
    assert _classes_in(s["val"], images) == every - {"only"}
    assert "rare" not in _classes_in(s["test"], images)  # its 2 images: one in val, one in training
    assert "single" in s["trainval"]
    assert len(s["val"]) == 20 and len(s["test"]) == 20 and len(s["trainval"]) == 163


def test_splits_disjoint_sorted_complete_and_deterministic() -> None:
    images = _random_images(np.random.default_rng(1), 120, 6, 0.3)
    s = make_image_sets(images, val=0.15, test=0.05, seed=7)
    assert list(s) == ["trainval", "val", "test"]
    all_ids = s["trainval"] + s["val"] + s["test"]
    assert sorted(all_ids) == sorted(images) and len(set(all_ids)) == len(all_ids)
    assert all(v == sorted(v) for v in s.values())
    assert (len(s["val"]), len(s["test"])) == (18, 6)
    assert make_image_sets(dict(reversed(list(images.items()))), val=0.15, test=0.05, seed=7) == s
    assert make_image_sets(images, val=0.15, test=0.05, seed=8) != s


def test_coverage_beats_the_fraction_when_needed() -> None:
    # 10 classes, each in exactly 2 images of its own: val at 5% (1 image) cannot cover them all.
    images = {f"{c}_{k}": Counter({c: 1}) for c in "abcdefghij" for k in range(2)}
    s = make_image_sets(images, val=0.05, seed=0)
    assert len(s["val"]) == 10 and _classes_in(s["val"], images) == set("abcdefghij")
    assert _classes_in(s["trainval"], images) == set("abcdefghij") and s["test"] == []


def test_difficult_only_class_is_not_present(tmp_path: Path) -> None:
    _make_dataset(tmp_path, {"a": [("ship", 0), ("plane", 1)], "b": [("plane", 2)], "c": [("ship", 0)]})
    counts = image_class_counts(tmp_path)
    assert counts == {"a": Counter({"ship": 1}), "b": Counter(), "c": Counter({"ship": 1})}


@pytest.mark.parametrize("trial", range(120))
def test_greedy_coverage_matches_brute_force(trial: int) -> None:
    """Classes covered by val == the most any val set can cover while training keeps every class."""
    rng = np.random.default_rng(trial)
    images = _random_images(rng, int(rng.integers(3, 9)), int(rng.integers(1, 5)), 0.4)
    ids = sorted(images)
    every = _classes_in(ids, images)
    best = 0
    for r in range(1, len(ids)):
        for subset in itertools.combinations(ids, r):
            rest = [i for i in ids if i not in subset]
            if _classes_in(rest, images) == every:
                best = max(best, len(_classes_in(list(subset), images)))
    s = make_image_sets(images, val=0.1, seed=trial)
    # When no image can leave training safely, the fill still takes one (the size holds): count
    # only the classes val shares with training.
    assert len(_classes_in(s["val"], images) & _classes_in(s["trainval"], images)) == best


@pytest.mark.parametrize(("val", "test", "n", "match"), [
    (-0.1, 0.0, 10, "val fraction"),
    (0.1, 1.0, 10, "test fraction"),
    (float("nan"), 0.0, 10, "val fraction"),
    (0.6, 0.4, 10, "no training images"),
    (0.1, 0.1, 2, "too few"),
    (0.1, 0.0, 0, "no images"),
])
def test_bad_fractions_raise(val: float, test: float, n: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_image_sets({f"i{k}": Counter() for k in range(n)}, val=val, test=test)


# ------------------------------------------------------------------------------ files, table
def test_written_files_are_read_by_the_dataset(tmp_path: Path) -> None:
    from bbavectors.data.dataset import DotaDataset, read_split_file

    _make_dataset(tmp_path, {f"img{k:02d}": [("ship" if k % 3 else "plane", 0)] for k in range(20)})
    (tmp_path / "images" / "background.png").write_bytes(b"x")  # no label file: a background image
    result = make_image_set_files(tmp_path, val=0.2, test=0.0, seed=3, classes=["plane", "ship"])
    for name, ids in result.splits.items():
        assert read_split_file(tmp_path / f"{name}.txt") == ids
    assert (tmp_path / "test.txt").read_text() == ""  # written empty: no stale test split
    assert len(result.splits["val"]) == 4 and "background" in sum(result.splits.values(), [])
    ds = DotaDataset(tmp_path, "val", classes=["plane", "ship"])
    assert sorted(ds.image_ids) == result.splits["val"]
    assert not list(tmp_path.glob(".*tmp"))


def test_table_counts_by_hand() -> None:
    images = {"a": Counter({"ship": 2}), "b": Counter({"ship": 1, "plane": 1}), "c": Counter()}
    table = format_image_set_table(images, {"trainval": ["a", "c"], "val": ["b"], "test": []},
                                   ["plane", "ship"])
    rows = {line.split()[0]: line.split() for line in table.splitlines()[3:] if "|" in line}
    assert rows["plane"] == ["plane", "0", "1", "0", "|", "0", "1", "0"]
    assert rows["ship"] == ["ship", "1", "1", "0", "|", "2", "1", "0"]
    assert table.splitlines()[-1].split() == ["all", "images", "2", "1", "0", "|", "2", "2", "0"]


def test_real_ssdd_split(shared_data: Path, tmp_path: Path) -> None:
    counts = image_class_counts(shared_data / "ssdd_rbox_train")
    assert len(counts) == 928 and sum(c["ship"] for c in counts.values()) == 2017
    s = make_image_sets(counts, val=0.1, test=0.1, seed=0)
    assert [len(s[k]) for k in ("trainval", "val", "test")] == [742, 93, 93]
    assert make_image_sets(counts, val=0.1, test=0.1, seed=0) == s
    write_image_set_files(tmp_path, s)
    assert (tmp_path / "val.txt").read_text().splitlines() == s["val"]


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tool = _load_tool("make_splits")
    _make_dataset(tmp_path, {f"i{k}": [("car", 0), ("bus", 0)] if k < 4 else [("car", 0)] for k in range(10)})
    assert tool.main(["--data", str(tmp_path), "--dry-run"]) == 0
    assert not (tmp_path / "val.txt").exists()
    assert tool.main(["--data", str(tmp_path), "--val", "0.2", "--test", "0.1", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "bus" in out and "wrote trainval.txt 7, val.txt 2, test.txt 1" in out
    val = (tmp_path / "val.txt").read_text().split()
    assert any(v in {"i0", "i1", "i2", "i3"} for v in val)  # "bus" covered
    assert tool.main(["--data", str(tmp_path), "--val", "1.5"]) == 2
    assert tool.main(["--data", str(tmp_path / "none")]) == 2


def test_split_files_written_outside_a_read_only_data_set(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import stat

    from bbavectors.data.dataset import DotaDataset

    tool = _load_tool("make_splits")
    data = tmp_path / "ro"
    _make_dataset(data, {f"i{k}": [("car", 0)] for k in range(6)})
    modes = {p: p.stat().st_mode for p in [data, *data.rglob("*")]}
    for p in modes:
        p.chmod(stat.S_IMODE(modes[p]) & ~0o222)
    if os.access(data, os.W_OK):  # root writes anyway: make writes into the data set fail as they would
        import DOTA_devkit.atomic as atomic_module

        real_open = open

        def read_only(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
            if "w" in mode and data in Path(str(file)).parents:
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, mode, *args, **kwargs)  # type: ignore[call-overload]

        # Every writer goes through DOTA_devkit.atomic: make its opens inside the data set fail.
        monkeypatch.setattr(atomic_module, "open", read_only, raising=False)
    before = sorted(p.name for p in data.rglob("*"))
    try:
        assert tool.main(["--data", str(data), "--val", "0.2"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: cannot write the split files") and "--out" in err
        assert tool.main(["--data", str(data), "--val", "0.2", "--out", str(tmp_path / "sets")]) == 0
        assert f"in {tmp_path / 'sets'}" in capsys.readouterr().out
        written = sorted(p.name for p in (tmp_path / "sets").iterdir())
        assert written == ["test.txt", "trainval.txt", "val.txt"]
        assert sorted(p.name for p in data.rglob("*")) == before
        val = DotaDataset(data, tmp_path / "sets" / "val.txt", ["car"], input_size=32)
        assert len(val) == 1
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


def test_regression_no_name_is_exported_by_both_split_modules() -> None:
    """DOTA_devkit.split (patches) and the split-file module both exported ``split_dataset``."""
    from DOTA_devkit import image_sets, split

    assert not set(image_sets.__all__) & set(split.__all__)


def test_training_conversion_and_evaluation_read_a_split_file_alike(tmp_path: Path) -> None:
    """Regression: three readers disagreed (``P0004.txt`` kept whole by training, a duplicate kept
    twice by conversion, a trailing comment kept by conversion)."""
    from bbavectors.data.dataset import read_split_file as training_reader
    from DOTA_devkit.eval import read_imageset
    from DOTA_devkit.formats.common import read_split_file as conversion_reader

    path = tmp_path / "val.txt"
    path.write_text("P0001\nP0002.png  # night\n\n# header\nimages/P0003.jpg\nP0004.txt\nP0001\nv1.2\n",
                    encoding="utf-8")
    expected = ["P0001", "P0002", "P0003", "P0004", "v1.2"]
    assert training_reader(path) == conversion_reader(path) == read_imageset(path) == expected
