"""Bad input to the converters: reported with file and line or object, counted, skipped (or refused
with strict), and the counts add up: objects read = written + skipped."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from tool_loader import load_tool as _load_tool

from DOTA_devkit.formats.dataset import convert_dataset
from DOTA_devkit.formats.rolabelimg import convert_dota_to_rolabelimg, convert_rolabelimg_to_dota
from DOTA_devkit.labels import LabelError, read_dota_label

REPO = Path(__file__).resolve().parents[1]
BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<annotations><image name="&lol2;"/></annotations>
"""




def _blank(path: Path, w: int = 200, h: int = 120) -> None:
    cv2.imwrite(str(path), np.zeros((h, w, 3), np.uint8))


GOOD = "0 0.1 0.1 0.3 0.1 0.3 0.4 0.1 0.4"


def _yolo_set(tmp_path: Path) -> Path:
    root = tmp_path / "yolo"
    for d in ("images/train", "labels/train"):
        (root / d).mkdir(parents=True)
    _blank(root / "images/train/a.png")
    _blank(root / "images/train/bg.png")
    (root / "labels/train/a.txt").write_text(
        "\n".join(
            [
                GOOD,  # 1 kept
                "0 0.1 0.1 0.3",  # 2 malformed: 4 fields
                "0 0.1 0.1 0.3 0.1 0.3 x 0.1 0.4",  # 3 malformed: not a number
                "0 nan 0.1 0.3 0.1 0.3 0.4 0.1 0.4",  # 4 non-finite
                "7 0.1 0.1 0.3 0.1 0.3 0.4 0.1 0.4",  # 5 unknown class index
                "0 0.1 0.1 1.5 0.1 0.3 0.4 0.1 0.4",  # 6 out of range
                "0 0.1 0.1 0.1 0.1 0.1 0.1 0.1 0.1",  # 7 degenerate
            ]
        )
        + "\n"
    )
    (root / "labels/train/orphan.txt").write_text(GOOD + "\n" + GOOD + "\n")
    (root / "train.txt").write_text("./images/train/a.png\n./images/train/bg.png\n./images/train/gone.png\n")
    (root / "data.yaml").write_text("train: train.txt\nval: train.txt\nnames: [car]\n")
    return root


def test_yolo_bad_lines_reported_by_file_and_line_and_counted(tmp_path: Path) -> None:
    report = convert_dataset(_yolo_set(tmp_path), tmp_path / "out", "yolo-obb", progress=False)
    where = {(Path(i.path).name, i.line, i.kind) for i in report.labels.issues}
    assert where == {
        ("a.txt", 2, "malformed"),
        ("a.txt", 3, "malformed"),
        ("a.txt", 4, "non-finite"),
        ("a.txt", 5, "unknown-class"),
        ("a.txt", 6, "out-of-range"),
        ("a.txt", 7, "degenerate"),
        ("orphan.txt", 0, "missing-image"),
        ("gone.png", 0, "missing-image"),
    }
    assert report.objects_written == 1 and report.objects_read() == 9  # 7 lines in a.txt + 2 in orphan.txt
    assert report.balanced() and report.files_read == 4 and report.files_written == 2  # a, bg
    assert report.images_without_labels == ["bg"]
    assert (tmp_path / "out/labelTxt/bg.txt").read_text() == ""  # a background image stays one
    assert "objects: 9 read = 1 written + 8 skipped" in report.summary()
    with pytest.raises(LabelError, match=r"a\.txt:2: malformed"):
        convert_dataset(_yolo_set(tmp_path / "s"), tmp_path / "out2", "yolo-obb", strict=True, progress=False)


def _labelme_set(tmp_path: Path, declared: tuple[int, int] = (200, 120)) -> Path:
    root = tmp_path / "lm"
    root.mkdir()
    quad = [[10, 10], [50, 10], [50, 30], [10, 30]]
    for name in ("a", "broken"):
        _blank(root / f"{name}.png")
        doc = {
            "shapes": [{"label": "car", "points": quad, "shape_type": "polygon"}] * 2,
            "imagePath": f"{name}.png",
            "imageWidth": declared[0],
            "imageHeight": declared[1],
        }
        (root / f"{name}.json").write_text(json.dumps(doc))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # unreadable image
    (root / "half.json").write_text('{"shapes": [')
    return root


def test_unreadable_image_skips_its_file_and_counts_its_objects(tmp_path: Path) -> None:
    report = convert_dataset(_labelme_set(tmp_path), tmp_path / "out", "labelme", progress=False)
    kinds = Counter((Path(i.path).name, i.kind) for i in report.labels.issues)
    assert kinds == Counter({("broken.json", "unreadable-image"): 1, ("half.json", "malformed-json"): 1})
    assert report.dropped == Counter({"unreadable-image": 2})
    assert report.objects_written == 2 and report.objects_read() == 4 and report.balanced()
    assert report.files_read == 3 and report.files_written == 1
    assert sorted(p.name for p in (tmp_path / "out/images").iterdir()) == ["a.png"]


def test_size_mismatch_is_a_note_or_an_error_with_strict(tmp_path: Path) -> None:
    src = _labelme_set(tmp_path, declared=(300, 300))
    (src / "broken.json").unlink()
    (src / "half.json").unlink()
    report = convert_dataset(src, tmp_path / "out", "labelme", progress=False)
    (note,) = report.notes
    assert note.kind == "size-mismatch" and "declares 300x300" in note.message and "200x120" in note.message
    assert report.objects_written == 2 and "1 size-mismatch" in report.summary()
    with pytest.raises(LabelError, match=r"a\.json:0: size-mismatch"):
        convert_dataset(src, tmp_path / "out2", "labelme", strict=True, progress=False)


def test_dota_labels_without_images_and_images_without_labels(shared_data: Path, tmp_path: Path) -> None:
    src = tmp_path / "dota"
    shutil.copytree(shared_data / "dota_demo", src)
    (src / "images/P0004.png").unlink()
    _blank(src / "images/extra.png")
    report = convert_dataset(src, tmp_path / "yolo", "dota", "yolo-obb", progress=False)
    (issue,) = report.labels.issues[-1:]
    assert issue.kind == "missing-image" and issue.path.endswith("P0004.txt")
    assert report.dropped["missing-image"] == 107 and report.images_without_labels == ["extra"]
    assert report.object_skips() == Counter({"missing-image": 107, "degenerate": 2})  # 2 zero-area polygons
    assert report.balanced() and (tmp_path / "yolo/labels/extra.txt").read_text() == ""


def test_cvat_unsafe_xml_refused_and_reported(tmp_path: Path) -> None:
    (tmp_path / "cvat").mkdir()
    (tmp_path / "cvat/annotations.xml").write_text(BILLION_LAUGHS)
    report = convert_dataset(tmp_path / "cvat", tmp_path / "out", "cvat", progress=False)
    (issue,) = report.labels.issues
    assert issue.kind == "malformed-xml" and "unsafe XML refused" in issue.message
    assert report.files_read == 1 and report.files_written == 0 and report.balanced()


def test_cvat_duplicate_image_ids_and_tracks(tmp_path: Path) -> None:
    (tmp_path / "cvat/images").mkdir(parents=True)
    _blank(tmp_path / "cvat/images/a.png")
    box = '<box label="car" xtl="1" ytl="1" xbr="9" ybr="9"/>'
    (tmp_path / "cvat/annotations.xml").write_text(
        f'<annotations><image id="0" name="a.png" width="200" height="120">{box}</image>'
        f'<image id="1" name="sub/a.png" width="200" height="120">{box}{box}</image>'
        '<track id="0" label="car"><box frame="0" xtl="1" ytl="1" xbr="9" ybr="9"/></track></annotations>'
    )
    report = convert_dataset(tmp_path / "cvat", tmp_path / "out", "cvat", progress=False)
    kinds = Counter(i.kind for i in report.labels.issues)
    assert kinds == Counter({"duplicate-id": 1, "unsupported-shape": 1})
    assert report.objects_written == 1 and report.objects_read() == 4 and report.balanced()


def test_hrsc_class_id_outside_the_map(shared_data: Path, tmp_path: Path) -> None:
    (tmp_path / "xml").mkdir()
    shutil.copy(shared_data / "other_formats/hrsc2016/100000006.xml", tmp_path / "xml")
    _blank(tmp_path / "xml/100000006.bmp", 1172, 816)
    report = convert_dataset(
        tmp_path / "xml", tmp_path / "out", "hrsc", class_map={"1": "other"}, progress=False
    )
    (issue,) = report.labels.issues
    assert issue.kind == "unknown-class" and issue.line > 0 and "Class_ID '100000013'" in issue.message
    assert report.objects_read() == 1 and report.objects_written == 0 and report.balanced()


# ------------------------------------------------- issue 10 section 4: convert_rolabelimg checks images
def test_regression_rolabelimg_unreadable_image_not_copied(shared_data: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(shared_data / "rolabelimg/cgvict_demo", src)
    (src / "demo2.png").write_bytes(b"not an image")
    out = convert_rolabelimg_to_dota(src, tmp_path / "dst", progress=False)
    (issue,) = out.report.issues
    assert (
        issue.kind == "unreadable-image"
        and issue.path.endswith("demo2.xml")
        and "2 object(s)" in issue.message
    )
    assert out.written == ["demo", "demo3"] and out.report.objects == 8
    assert not (tmp_path / "dst/images/demo2.png").exists()


def test_rolabelimg_size_mismatch_reported(shared_data: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(shared_data / "rolabelimg/cgvict_demo", src)
    img = cv2.imread(str(src / "demo.png"))
    cv2.imwrite(str(src / "demo.png"), cv2.resize(img, None, fx=0.5, fy=0.5))
    out = convert_rolabelimg_to_dota(src, tmp_path / "dst", progress=False)
    (note,) = out.notes
    assert note.kind == "size-mismatch" and note.path.endswith("demo.xml")
    assert out.written == ["demo", "demo2", "demo3"] and "size differs" in out.summary()
    with pytest.raises(LabelError, match=r"demo\.xml:0: size-mismatch"):
        convert_rolabelimg_to_dota(src, tmp_path / "dst2", strict=True, progress=False)


def test_rolabelimg_to_xml_reports_images_without_labels(shared_data: Path, tmp_path: Path) -> None:
    convert_rolabelimg_to_dota(shared_data / "rolabelimg/cgvict_demo", tmp_path / "d", progress=False)
    (tmp_path / "d/labelTxt/demo3.txt").unlink()
    out = convert_dota_to_rolabelimg(tmp_path / "d", tmp_path / "x", progress=False)
    assert out.images_without_labels == ["demo3"] and "1 image(s) without a label file" in out.summary()


def test_cli_strict_exit_code_and_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli = _load_tool("convert_dataset")
    src = _yolo_set(tmp_path)
    assert cli.main(["--from", "yolo-obb", "--src", str(src), "--dst", str(tmp_path / "o"), "--strict"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "a.txt:2: malformed" in err
    assert cli.main(["--from", "yolo-obb", "--src", str(src), "--dst", str(tmp_path / "o2"), "--quiet"]) == 0
    assert "objects: 9 read = 1 written + 8 skipped" in capsys.readouterr().out
    assert read_dota_label(tmp_path / "o2/labelTxt/a.txt").class_names() == ["car"]
