"""tools/convert_dataset.py and DOTA_devkit.formats.dataset: the real HRSC2016 / DIOR-R / roLabelImg
files through the folder converter, Task1 detections as pre-annotations, --check, the CLI."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from tool_loader import load_tool as _load_tool

from DOTA_devkit.classes import read_class_file
from DOTA_devkit.formats.check import check_dataset
from DOTA_devkit.formats.dataset import convert_dataset
from DOTA_devkit.formats.dior import DIOR_R_CLASSES
from DOTA_devkit.formats.rolabelimg import convert_rolabelimg_to_dota
from DOTA_devkit.formats.xml_io import parse_xml_file
from DOTA_devkit.geometry import obb_to_poly
from DOTA_devkit.labels import read_dota_label

REPO = Path(__file__).resolve().parents[1]




cli = _load_tool("convert_dataset")


def _field(path: Path, tag: str) -> float:
    text = parse_xml_file(path).findtext(f".//{tag}")
    assert text is not None
    return float(text)


def _blank(path: Path, w: int, h: int) -> None:
    cv2.imwrite(str(path), np.zeros((h, w, 3), np.uint8))


def _hrsc_tree(shared_data: Path, tmp_path: Path) -> Path:
    """HRSC2016's layout around the real XML; the image (not distributed with it) is a blank one of
    the declared size."""
    full = tmp_path / "HRSC2016" / "FullDataSet"
    (full / "Annotations").mkdir(parents=True)
    (full / "AllImages").mkdir()
    (tmp_path / "HRSC2016" / "ImageSets").mkdir()
    shutil.copy(shared_data / "other_formats/hrsc2016/100000006.xml", full / "Annotations")
    _blank(full / "AllImages" / "100000006.bmp", 1172, 816)
    (tmp_path / "HRSC2016" / "ImageSets" / "trainval.txt").write_text("100000006\n")
    return full


def test_hrsc_real_file_to_dota(shared_data: Path, tmp_path: Path) -> None:
    full = _hrsc_tree(shared_data, tmp_path)
    report = convert_dataset(full, tmp_path / "out", "hrsc", progress=False)
    assert report.balanced() and report.objects_written == 1 and report.classes == ("ship",)
    labels = read_dota_label(tmp_path / "out/labelTxt/100000006.txt")
    xml = full / "Annotations/100000006.xml"
    mbox = [_field(xml, t) for t in ("mbox_cx", "mbox_cy", "mbox_w", "mbox_h", "mbox_ang")]
    np.testing.assert_allclose(labels.polygons()[0], obb_to_poly([mbox])[0], atol=1e-3)
    # The box_* fields cannot show the angle's sign; the bow point can: it lies near the middle
    # of a short side of the converted polygon (35 px on a 778 px ship), not mid-ship.
    bow = np.array([_field(xml, "header_x"), _field(xml, "header_y")])
    q = labels.polygons()[0].reshape(4, 2)
    ends = [(q[1] + q[2]) / 2, (q[3] + q[0]) / 2]
    assert min(np.linalg.norm(bow - e) for e in ends) < 0.05 * mbox[2]
    assert labels.gsd == pytest.approx(1.07) and labels.imagesource == "HRSC2016"
    assert (tmp_path / "out/trainval.txt").read_text().split() == ["100000006"]  # ImageSets split
    assert read_class_file(tmp_path / "out/classes.txt") == ("ship",)
    (tmp_path / "map.txt").write_text("# Class_ID name\n100000013 aircraft-carrier\n")
    mapped = convert_dataset(
        full, tmp_path / "mapped", "hrsc", class_map=tmp_path / "map.txt", progress=False
    )
    assert mapped.classes == ("aircraft-carrier",)
    assert read_dota_label(tmp_path / "mapped/labelTxt/100000006.txt").class_names() == ["aircraft-carrier"]


def test_dior_real_file_to_dota(shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "DIOR-R"
    obb_dir = root / "Annotations" / "Oriented Bounding Boxes"
    obb_dir.mkdir(parents=True)
    (root / "JPEGImages-trainval").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    shutil.copy(shared_data / "other_formats/dior_r/00001.xml", obb_dir)
    shutil.copy(shared_data / "other_formats/dior_r/00001.jpg", root / "JPEGImages-trainval")
    (root / "ImageSets/Main/train.txt").write_text("00001\n")
    report = convert_dataset(root, tmp_path / "out", "dior", progress=False)
    assert report.balanced() and report.objects_written == 1 and not report.notes  # 800x800 as declared
    labels = read_dota_label(tmp_path / "out/labelTxt/00001.txt")
    corners = [
        _field(obb_dir / "00001.xml", t)
        for t in (
            "x_left_top",
            "y_left_top",
            "x_right_top",
            "y_right_top",
            "x_right_bottom",
            "y_right_bottom",
            "x_left_bottom",
            "y_left_bottom",
        )
    ]
    np.testing.assert_allclose(labels.polygons()[0], corners)
    assert labels.class_names() == ["golffield"]
    assert read_class_file(tmp_path / "out/classes.txt") == DIOR_R_CLASSES
    assert (tmp_path / "out/train.txt").read_text().split() == ["00001"]
    assert (tmp_path / "out/images/00001.jpg").is_file()


def test_rolabelimg_through_both_tools_gives_the_same_labels(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "rolabelimg/cgvict_demo"
    old = convert_rolabelimg_to_dota(src, tmp_path / "old", progress=False)
    new = convert_dataset(src, tmp_path / "new", "rolabelimg", progress=False)
    assert new.written == old.written and new.objects_written == old.report.objects == 10
    for stem in old.written:
        a = (tmp_path / "old/labelTxt" / f"{stem}.txt").read_text()
        assert a == (tmp_path / "new/labelTxt" / f"{stem}.txt").read_text()


def test_rolabelimg_real_round_trip(shared_data: Path, tmp_path: Path) -> None:
    """Real roLabelImg files -> DOTA -> roLabelImg -> DOTA: the same corner sets within 0.01 px."""
    first = convert_dataset(shared_data / "rolabelimg/drone", tmp_path / "d1", "rolabelimg", progress=False)
    convert_dataset(
        tmp_path / "d1", tmp_path / "xml", "dota", "rolabelimg", image_mode="symlink", progress=False
    )
    again = convert_dataset(
        tmp_path / "xml", tmp_path / "d2", "rolabelimg", image_mode="none", progress=False
    )
    assert again.objects_written == first.objects_written == 64
    worst = 0.0
    for stem in first.written:
        a = read_dota_label(tmp_path / "d1/labelTxt" / f"{stem}.txt").polygons()
        b = read_dota_label(tmp_path / "d2/labelTxt" / f"{stem}.txt").polygons()
        for pa, pb in zip(a, b):
            qa, qb = pa.reshape(4, 2), pb.reshape(4, 2)
            worst = max(
                worst,
                min(float(np.abs(np.roll(q, k, 0) - qa).max()) for q in (qb, qb[::-1]) for k in range(4)),
            )
    assert worst < 0.01


def test_task1_detections_become_pre_annotations(shared_data: Path, tmp_path: Path) -> None:
    labels = read_dota_label(shared_data / "dota_demo/labelTxt/P0003.txt")
    det = tmp_path / "det"
    det.mkdir()
    by_class: dict[str, list[str]] = {}
    for k, o in enumerate(labels.objects):
        score = 0.9 if k % 5 else 0.1  # every fifth detection is weak
        by_class.setdefault(o.class_name, []).append(
            f"P0003 {score} " + " ".join(f"{v:g}" for v in o.polygon)
        )
    for name, lines in by_class.items():
        (det / f"Task1_{name}.txt").write_text("\n".join(lines) + "\n")
    weak = len(range(0, len(labels.objects), 5))
    report = convert_dataset(
        det,
        tmp_path / "cvat",
        "task1",
        "cvat",
        image_dir=shared_data / "dota_demo/images",
        image_mode="symlink",
        progress=False,
    )
    assert report.balanced() and report.dropped["below-min-score"] == weak
    assert report.objects_written == len(labels.objects) - weak
    assert sorted(report.images_without_labels) == ["P0004", "P0005", "P1478__1__853___962"]
    back = convert_dataset(
        tmp_path / "cvat", tmp_path / "back", "cvat", "dota", image_mode="none", progress=False
    )
    assert back.objects_written == report.objects_written
    with pytest.raises(ValueError, match="task1 input needs the images"):
        convert_dataset(det, tmp_path / "y", "task1", "yolo-obb", progress=False)


def _check_fixture(tmp_path: Path) -> Path:
    """A 200 x 120 image with 3 hand-placed objects, a background image, a label without image."""
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    (root / "labelTxt").mkdir()
    _blank(root / "images" / "a.png", 200, 120)
    _blank(root / "images" / "bg.png", 100, 100)
    c, s = math.cos(math.radians(35)), math.sin(math.radians(35))
    turned = [100 + dx * c - dy * s for dx, dy in ((-20, -5), (20, -5), (20, 5), (-20, 5))]
    turned_y = [60 + dx * s + dy * c for dx, dy in ((-20, -5), (20, -5), (20, 5), (-20, 5))]
    rotated = " ".join(f"{x:.3f} {y:.3f}" for x, y in zip(turned, turned_y))
    (root / "labelTxt" / "a.txt").write_text(
        "0 10 40 10 40 20 0 20 car 0\n"  # 40 x 10, axis-aligned, touches the left border
        "0 10 40 10 40 20 0 20 car 1\n"  # its duplicate, difficult
        f"{rotated} ship 0\n"
    )  # 40 x 10 turned 35 degrees
    (root / "labelTxt" / "orphan.txt").write_text("0 0 10 0 10 10 0 10 car 0\n")
    return root


def test_check_report_by_hand(tmp_path: Path) -> None:
    c = check_dataset("dota", _check_fixture(tmp_path))
    assert c.images == 2 and c.objects == 3 and c.per_class == {"car": 2, "ship": 1} and c.difficult == 1
    assert c.objects_per_image_max == 3 and c.objects_per_image_mean == pytest.approx(1.5)
    assert c.short_side[50] == pytest.approx(10, abs=1e-2) and c.long_side[50] == pytest.approx(40, abs=1e-2)
    assert c.aspect[50] == pytest.approx(4, abs=1e-3)
    assert c.angle_histogram[0] == 2 and c.angle_histogram[2] == 1 and sum(c.angle_histogram) == 3
    assert c.axis_aligned == 2 and c.touching_border == 2 and c.duplicates == 1
    assert c.images_without_labels == ["bg"] and c.labels_without_images == ["orphan"]
    # median image long side 150 -> rounded up to 160 -> raised to the 512 floor
    assert c.suggestions[0].startswith("--input-size 512")
    text = str(c)
    assert (
        "duplicate pairs (same class, IoU > 0.9): 1" in text and "labels without images: 1 (orphan)" in text
    )


def test_cli(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = shared_data / "rolabelimg/cgvict_demo"
    assert cli.main(["--from", "rolabelimg", "--src", str(src), "--dst", str(tmp_path / "d"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "objects: 10 read = 10 written + 0 skipped" in out and "files: 3 read = 3 written" in out
    assert (
        cli.main(
            [
                "--from",
                "dota",
                "--to",
                "yolo-obb",
                "--src",
                str(tmp_path / "d"),
                "--dst",
                str(tmp_path / "y"),
                "--copy-images",
                "--quiet",
            ]
        )
        == 0
    )
    assert not (tmp_path / "y/images/demo.png").is_symlink()
    assert cli.main(["--from", "dota", "--src", str(tmp_path / "d"), "--check"]) == 0
    assert "objects per class: dog 4, person 4, cat 1, tv 1" in capsys.readouterr().out
    assert (
        cli.main(["--from", "labelme", "--src", str(tmp_path / "nothing"), "--dst", str(tmp_path / "n")]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: source not found") and len(err.strip().splitlines()) == 1
    assert (
        cli.main(["--from", "hrsc", "--to", "yolo-obb", "--src", str(src), "--dst", str(tmp_path / "z")]) == 2
    )
    assert "one side of a conversion must be dota" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--from", "dota", "--src", str(src)])  # neither --dst nor --check


def test_split_file_ids_paths_and_dotted_ids(tmp_path: Path) -> None:
    from DOTA_devkit.formats.common import read_split_file

    (tmp_path / "s.txt").write_text("P0001\n# a comment\n./images/P0002.png\nC:\\data\\P0003.jpg\nv1.2\n\n")
    assert read_split_file(tmp_path / "s.txt") == ["P0001", "P0002", "P0003", "v1.2"]


def test_check_lists_yolo_label_files_without_images(tmp_path: Path) -> None:
    root = tmp_path / "y"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    _blank(root / "images" / "a.png", 200, 120)
    (root / "labels" / "a.txt").write_text("0 0.1 0.1 0.3 0.1 0.3 0.4 0.1 0.4\n")
    (root / "labels" / "lost.txt").write_text("0 0.1 0.1 0.3 0.1 0.3 0.4 0.1 0.4\n")
    (root / "data.yaml").write_text("train: images\nval: images\nnames: [car]\n")
    c = check_dataset("yolo-obb", root)
    assert c.images == 1 and c.objects == 1 and c.labels_without_images == ["lost"]
    assert c.short_side[50] == pytest.approx(36) and c.long_side[50] == pytest.approx(40)


def test_dior_class_list_is_a_known_list() -> None:
    from DOTA_devkit.classes import load_class_list

    assert load_class_list("dior-r") == DIOR_R_CLASSES and len(DIOR_R_CLASSES) == 20
