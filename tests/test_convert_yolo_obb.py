"""YOLO-OBB (Ultralytics) both ways: the documented line, the writer's data set layout, real round
trips, and Ultralytics' own loader reading what we write.

Format reference: https://docs.ultralytics.com/datasets/obb/ (label line
``class_index x1 y1 x2 y2 x3 y3 x4 y4`` normalised to [0, 1]; data YAML ``path``, ``train``,
``val``, ``names``; ``train``/``val`` may be ``.txt`` lists of image paths).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from DOTA_devkit.formats.dataset import convert_dataset, dota_to_yolo_obb
from DOTA_devkit.formats.yolo_obb import (
    format_yolo_obb_line,
    image_to_label_path,
    load_data_yaml,
    parse_yolo_obb_lines,
)
from DOTA_devkit.labels import LabelReport, read_dota_label

DOC_LINE = "0 0.780811 0.743961 0.782371 0.74686 0.777691 0.752174 0.776131 0.749758"


def test_documented_line_parsed_by_hand() -> None:
    labels = parse_yolo_obb_lines([DOC_LINE], "doc.txt", ["plane"], (1000, 500), report=LabelReport())
    # x * width, y * height: 0.780811 * 1000 = 780.811, 0.743961 * 500 = 371.9805 ...
    np.testing.assert_allclose(
        labels.polygons()[0],
        [780.811, 371.9805, 782.371, 373.43, 777.691, 376.087, 776.131, 374.879],
        atol=1e-9,
    )
    assert labels.class_names() == ["plane"] and labels.difficult().tolist() == [0]


def test_writer_line_normalises_and_clamps() -> None:
    line, clipped = format_yolo_obb_line(np.array([10, 20, 30, 20, 30, 40, 10, 40.0]), 2, (100, 50))
    assert line == "2 0.1 0.4 0.3 0.4 0.3 0.8 0.1 0.8" and not clipped
    line, clipped = format_yolo_obb_line(np.array([-5, 20, 30, 20, 30, 60, -5, 60.0]), 0, (100, 50))
    assert line == "0 0 0.4 0.3 0.4 0.3 1 0 1" and clipped


def test_label_path_rule() -> None:
    assert image_to_label_path(Path("/d/images/train/a.b.jpg")) == Path("/d/labels/train/a.b.txt")
    assert image_to_label_path(Path("/images/x/images/a.png")) == Path("/images/x/labels/a.txt")


def test_names_as_list_or_dict(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("train: t.txt\nval: v.txt\nnames: [a, b]\n")
    (tmp_path / "b.yaml").write_text("path: .\ntrain: t.txt\nnames:\n  1: b\n  0: a\n")
    assert load_data_yaml(tmp_path / "a.yaml")[1] == ("a", "b")
    root, names, splits = load_data_yaml(tmp_path / "b.yaml")
    assert names == ("a", "b") and splits == {"train": "t.txt"} and root == tmp_path / "."
    (tmp_path / "c.yaml").write_text("names:\n  0: a\n  2: c\n")
    with pytest.raises(ValueError, match="indices must be 0..1"):
        load_data_yaml(tmp_path / "c.yaml")


def real_subset(src: Path, dst: Path, n: int) -> Path:
    """The first ``n`` images of a real DOTA folder with their labels (symlinks: nothing copied)."""
    (dst / "images").mkdir(parents=True)
    (dst / "labelTxt").mkdir()
    for label in sorted((src / "labelTxt").glob("*.txt"))[:n]:
        image = next((src / "images").glob(f"{label.stem}.*"))
        (dst / "images" / image.name).symlink_to(image.resolve())
        (dst / "labelTxt" / label.name).symlink_to(label.resolve())
    return dst


def _small_dota(shared_data: Path, tmp_path: Path) -> Path:
    """A DOTA folder of 20 real SSDD images, with trainval / val split files."""
    src = tmp_path / "dota"
    (src / "images").mkdir(parents=True)
    (src / "labelTxt").mkdir()
    ids = sorted(p.stem for p in (shared_data / "ssdd_rbox_train/labelTxt").glob("*.txt"))[:20]
    for i in ids:
        shutil.copy(shared_data / f"ssdd_rbox_train/images/{i}.jpg", src / "images")
        shutil.copy(shared_data / f"ssdd_rbox_train/labelTxt/{i}.txt", src / "labelTxt")
    (src / "trainval.txt").write_text("".join(f"{i}\n" for i in ids[:15]))
    (src / "val.txt").write_text("".join(f"{i}\n" for i in ids[15:]))
    (src / "classes.txt").write_text("ship\n")
    return src


def test_dota_to_yolo_layout(shared_data: Path, tmp_path: Path) -> None:
    src = _small_dota(shared_data, tmp_path)
    out = tmp_path / "yolo"
    report = dota_to_yolo_obb(src, out)
    assert report.files_written == 20 and report.balanced()
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data == {
        "path": str(out.resolve()),
        "train": "trainval.txt",
        "val": "val.txt",
        "names": {0: "ship"},
    }
    train = (out / "trainval.txt").read_text().split()
    assert len(train) == 15 and all(t.startswith("./images/") and t.endswith(".jpg") for t in train)
    assert len((out / "val.txt").read_text().split()) == 5
    first = out / train[0][2:]
    assert first.is_symlink() and os.path.samefile(first, src / train[0][2:])
    assert (out / "labels" / f"{first.stem}.txt").is_file()
    copied = tmp_path / "copied"
    dota_to_yolo_obb(
        src,
        copied,
        image_mode="copy",
        splits={"holdout": src / "val.txt"},
        train_split="trainval",
        val_split="holdout",
    )
    assert not (copied / train[0][2:]).is_symlink()
    assert yaml.safe_load((copied / "data.yaml").read_text())["val"] == "holdout.txt"
    with pytest.raises(ValueError, match="--val-split 'nope': no such split"):
        dota_to_yolo_obb(src, tmp_path / "bad", val_split="nope")


def test_ultralytics_loader_reads_what_we_write(shared_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("ultralytics", reason="ultralytics is optional (not a dependency)")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics.cfg import get_cfg
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    src = _small_dota(shared_data, tmp_path)
    dota_to_yolo_obb(src, tmp_path / "yolo")
    data = check_det_dataset(str(tmp_path / "yolo/data.yaml"))
    assert data["nc"] == 1 and Path(data["train"]).name == "trainval.txt"
    ds = YOLODataset(
        img_path=data["train"],
        imgsz=320,
        augment=False,
        hyp=get_cfg(overrides={"task": "obb"}),
        data=data,
        task="obb",
    )
    assert len(ds.labels) == 15
    expected = sum(
        len(read_dota_label(src / "labelTxt" / f"{Path(lb['im_file']).stem}.txt").objects) for lb in ds.labels
    )
    assert sum(len(lb["cls"]) for lb in ds.labels) == expected
    lb = ds.labels[0]
    stem = Path(lb["im_file"]).stem
    h, w = lb["shape"]
    ours = read_dota_label(src / "labelTxt" / f"{stem}.txt").polygons().reshape(-1, 4, 2) / [w, h]
    np.testing.assert_allclose(np.asarray(lb["segments"]), ours, atol=1e-6)


@pytest.mark.parametrize("dataset", ["dota_examples", "dota_demo", "ssdd_rbox_train"])
def test_real_round_trip_within_0_01_px(shared_data: Path, tmp_path: Path, dataset: str) -> None:
    src = real_subset(shared_data / dataset, tmp_path / "src", 150)
    there = convert_dataset(src, tmp_path / "yolo", "dota", "yolo-obb", progress=False)
    back = convert_dataset(
        tmp_path / "yolo", tmp_path / "back", "yolo-obb", "dota", image_mode="none", progress=False
    )
    assert there.balanced() and back.balanced() and back.objects_written == there.objects_written
    clipped = {(Path(n.path).stem, int(n.message.split()[1])) for n in there.notes if n.kind == "clipped"}
    worst = 0.0
    for stem in back.written:
        a = read_dota_label(src / "labelTxt" / f"{stem}.txt")
        b = read_dota_label(tmp_path / "back/labelTxt" / f"{stem}.txt")
        assert a.class_names() == b.class_names()
        for k, (pa, pb) in enumerate(zip(a.polygons(), b.polygons()), 1):
            if (stem, k) not in clipped:  # corner order kept: compared corner by corner
                worst = max(worst, float(np.abs(pa - pb).max()))
    assert worst < 0.01
    if dataset == "dota_examples":
        assert len(clipped) == 1  # one real object reaches outside its image: clamped, reported


def test_class_list_fixes_the_indices(shared_data: Path, tmp_path: Path) -> None:
    src = real_subset(shared_data / "dota_examples", tmp_path / "src", 2)  # P0075, P0168
    report = dota_to_yolo_obb(src, tmp_path / "y", classes="dota1.0")
    names = yaml.safe_load((tmp_path / "y/data.yaml").read_text())["names"]
    assert names[6] == "ship" and len(names) == 15 and report.classes[6] == "ship"
    for stem in report.written:
        expected = [
            names_index
            for names_index in (
                list(names.values()).index(c)
                for c in read_dota_label(src / "labelTxt" / f"{stem}.txt").class_names()
            )
        ]
        got = [
            int(line.split()[0]) for line in (tmp_path / "y/labels" / f"{stem}.txt").read_text().splitlines()
        ]
        assert got == expected
    made = tmp_path / "made/classes.txt"
    dota_to_yolo_obb(src, tmp_path / "z", classes=made)  # absent: created from the names found, sorted
    assert made.read_text().split() == sorted(set(report.labels.per_class))


def test_empty_split_files_are_not_used_by_data_yaml(shared_data: Path, tmp_path: Path) -> None:
    src = _small_dota(shared_data, tmp_path)
    (src / "val.txt").write_text("")  # make_splits writes an empty test.txt the same way
    (src / "test.txt").write_text((src / "trainval.txt").read_text().split()[0] + "\n")
    dota_to_yolo_obb(src, tmp_path / "y")
    data = yaml.safe_load((tmp_path / "y/data.yaml").read_text())
    assert data["train"] == "trainval.txt" and data["val"] == "test.txt" and "test" not in data
