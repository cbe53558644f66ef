"""CVAT for images 1.1 XML both ways, and LabelMe JSON, from fixtures written after their docs.

* CVAT: https://docs.cvat.ai/docs/other/xml_format/ ("Version 1.1", annotation mode); rotation
  sense from CVAT's RotatedBoxesToPolygons (cvat/apps/dataset_manager/formats/transformations.py).
* LabelMe: https://github.com/wkentaro/labelme (labelme/label_file.py).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from DOTA_devkit.formats.cvat import (
    CvatImageEntry,
    cvat_box_to_polygon,
    polygon_to_cvat_box,
    read_cvat_xml,
    write_cvat_xml,
)
from DOTA_devkit.formats.dataset import convert_dataset
from DOTA_devkit.formats.labelme import JsonError, read_labelme_json
from DOTA_devkit.labels import DotaObject, LabelError, LabelReport, read_dota_label

DOC_XML = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta><task><name>t</name><size>1</size><mode>annotation</mode>
    <labels><label><name>car</name></label><label><name>plane</name></label></labels></task></meta>
  <image id="0" name="images/img1.jpg" width="640" height="480">
    <box label="car" occluded="0" source="manual" xtl="100" ytl="150" xbr="300" ybr="250" z_order="0">
      <attribute name="difficult">true</attribute>
    </box>
    <box label="car" occluded="0" xtl="100" ytl="150" xbr="300" ybr="250" rotation="90" z_order="0"/>
    <polygon label="plane" occluded="0" source="manual" points="10,10;50,10;50,30;10,30" z_order="0"/>
    <polygon label="plane" occluded="0" source="manual" points="10,10;50,10;50,30" z_order="0"/>
    <polyline label="car" occluded="0" source="manual" points="1,1;5,5" z_order="0"/>
    <points label="car" occluded="0" source="manual" points="1,1" z_order="0"/>
  </image>
</annotations>
"""


def test_cvat_documented_shapes_by_hand(tmp_path: Path) -> None:
    (tmp_path / "annotations.xml").write_text(DOC_XML)
    report = LabelReport()
    ann = read_cvat_xml(tmp_path / "annotations.xml", report=report)
    assert ann.classes == ("car", "plane")
    (image,) = ann.images
    assert image.name == "images/img1.jpg" and image.size == (640, 480)
    polys = image.labels.polygons()
    np.testing.assert_allclose(polys[0], [100, 150, 300, 150, 300, 250, 100, 250])
    # Turned 90 deg clockwise about (200, 200): TL (-100, -50) -> (50, -100) from the centre.
    np.testing.assert_allclose(polys[1], [250, 100, 250, 300, 150, 300, 150, 100], atol=1e-9)
    np.testing.assert_allclose(polys[2], [10, 10, 50, 10, 50, 30, 10, 30])
    assert image.labels.difficult().tolist() == [1, 0, 0]
    assert Counter(i.kind for i in report.issues) == Counter({"not-4-points": 1, "unsupported-shape": 2})
    bad = next(i for i in report.issues if i.kind == "not-4-points")
    assert bad.line == 12 and "object 4 (plane)" in bad.message and "images/img1.jpg" in bad.message


def test_cvat_box_helpers_match_the_geometry_module() -> None:
    poly = cvat_box_to_polygon(60, 45, 140, 75, 30)
    np.testing.assert_allclose(
        poly, [72.859, 27.010, 142.141, 67.010, 127.141, 92.990, 57.859, 52.990], atol=1e-3
    )
    xtl, ytl, xbr, ybr, rot = polygon_to_cvat_box(poly)
    np.testing.assert_allclose([xtl, ytl, xbr, ybr, rot], [60, 45, 140, 75, 30], atol=1e-9)


def test_cvat_writer_then_reader(tmp_path: Path) -> None:
    poly = cvat_box_to_polygon(60, 45, 140, 75, 30)
    plane = np.array([0, 0, 40, 5, 42, 20, 3, 18.0])  # not a rectangle
    objs = [DotaObject(poly, "car", 2), DotaObject(plane, "plane", 0)]
    entries = [CvatImageEntry("a.png", (200, 120), objs)]
    assert write_cvat_xml(tmp_path / "p.xml", entries, ["car", "plane"], "polygon") == []
    back = read_cvat_xml(tmp_path / "p.xml").images[0].labels
    np.testing.assert_allclose(back.polygons(), np.stack([poly, plane]), atol=1e-4)
    assert back.difficult().tolist() == [1, 0]  # CVAT's checkbox: difficult 2 comes back as 1
    assert write_cvat_xml(tmp_path / "b.xml", entries, ["car", "plane"], "box") == [(0, 1)]  # the plane
    boxes = read_cvat_xml(tmp_path / "b.xml").images[0].labels.polygons()
    assert (
        min(np.abs(np.roll(boxes[0].reshape(4, 2), k, 0) - poly.reshape(4, 2)).max() for k in range(4)) < 1e-3
    )


@pytest.mark.parametrize("shape", ["polygon", "box"])
def test_cvat_real_round_trip(shared_data: Path, tmp_path: Path, shape: str) -> None:
    """dota_demo: polygons come back corner by corner; as boxes, every rectangle comes back (as a
    corner set: the box starts at its own top-left corner) and the others are counted."""
    src = shared_data / "dota_demo"
    there = convert_dataset(
        src, tmp_path / "cvat", "dota", "cvat", cvat_shape=shape, image_mode="symlink", progress=False
    )
    back = convert_dataset(
        tmp_path / "cvat", tmp_path / "back", "cvat", "dota", image_mode="none", progress=False
    )
    assert there.balanced() and back.balanced() and back.objects_written == there.objects_written == 585
    worst, rectangles = 0.0, 0
    for stem in back.written:
        a = read_dota_label(src / "labelTxt" / f"{stem}.txt").polygons()
        b = read_dota_label(tmp_path / "back/labelTxt" / f"{stem}.txt").polygons()
        for pa, pb in zip(a, b):
            if shape == "polygon":
                worst = max(worst, float(np.abs(pa - pb).max()))
                continue
            qa, qb = pa.reshape(4, 2), pb.reshape(4, 2)
            err = min(np.abs(np.roll(q, k, 0) - qa).max() for q in (qb, qb[::-1]) for k in range(4))
            side = np.linalg.norm(qa - np.roll(qa, 1, 0), axis=1)
            diag = np.linalg.norm(qa[0] - qa[2]), np.linalg.norm(qa[1] - qa[3])
            parallelogram = abs(side[0] - side[2]) < 1e-6 and abs(side[1] - side[3]) < 1e-6
            if parallelogram and abs(diag[0] - diag[1]) < 1e-6:  # a rectangle
                rectangles += 1
                worst = max(worst, float(err))
    assert worst < 0.01
    if shape == "box":
        assert rectangles > 100
        approximated = sum(n.kind == "approximated" for n in there.notes)
        assert approximated == 254  # dota_demo: 254 quadrilaterals far from their min-area rectangle


# ------------------------------------------------------------------------------------ LabelMe
def _labelme(shapes: list[dict[str, object]], **extra: object) -> dict[str, object]:
    return {
        "version": "5.4.1",
        "flags": {},
        "shapes": shapes,
        "imagePath": "a.png",
        "imageData": None,
        "imageHeight": 120,
        "imageWidth": 200,
        **extra,
    }


def _shape(kind: str, points: list[list[float]], label: str = "car", **extra: object) -> dict[str, object]:
    return {
        "label": label,
        "points": points,
        "group_id": None,
        "description": "",
        "shape_type": kind,
        "flags": {},
        **extra,
    }


def test_labelme_documented_shapes(tmp_path: Path) -> None:
    quad = [[10, 10], [50, 12], [48, 30], [8, 28]]
    doc = _labelme(
        [
            _shape("polygon", quad, flags={"difficult": True}),
            _shape("rectangle", [[60, 40], [20, 10]]),
            _shape("rotation", quad),
            _shape("polygon", quad[:3]),
            _shape("circle", [[5, 5], [9, 9]]),
            _shape("polygon", quad, label="small car"),
        ]
    )
    (tmp_path / "a.json").write_text(json.dumps(doc))
    report = LabelReport()
    ann = read_labelme_json(tmp_path / "a.json", report=report)
    assert ann.size == (200, 120) and ann.image_path == "a.png"
    np.testing.assert_allclose(ann.labels.polygons(), [np.ravel(quad), [20, 10, 60, 10, 60, 40, 20, 40]])
    assert ann.labels.difficult().tolist() == [1, 0]
    kinds = [(i.kind, i.message.split(":")[0]) for i in report.issues]
    assert kinds == [
        ("unsupported-shape", "object 3 (car)"),
        ("not-4-points", "object 4 (car)"),
        ("unsupported-shape", "object 5 (car)"),
        ("bad-class-name", "object 6 (small car)"),
    ]
    with pytest.raises(
        LabelError, match=r"a\.json:0: unsupported-shape: object 3 \(car\): shape_type 'rotation'"
    ):
        read_labelme_json(tmp_path / "a.json", strict=True)


def test_labelme_malformed_file(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"shapes": [')
    with pytest.raises(JsonError, match=r"bad\.json: malformed JSON"):
        read_labelme_json(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"images": []}')
    with pytest.raises(JsonError, match="not a LabelMe annotation"):
        read_labelme_json(tmp_path / "other.json")
