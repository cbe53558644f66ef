"""HRSC2016 and DIOR-R readers: real files, the angle sense, bad input."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import shapely

from DOTA_devkit.formats.dior import read_dior_image_size, read_dior_xml
from DOTA_devkit.formats.hrsc import read_hrsc_image_size, read_hrsc_xml
from DOTA_devkit.formats.xml_io import XmlError, parse_xml_file
from DOTA_devkit.geometry import obb_to_poly, poly_signed_area, poly_to_hbb
from DOTA_devkit.labels import LabelError, LabelReport

HRSC = "other_formats/hrsc2016/100000006.xml"
DIOR = "other_formats/dior_r/00001.xml"


def _field(path: Path, tag: str) -> float:
    text = parse_xml_file(path).findtext(f".//{tag}")
    assert text is not None
    return float(text)


def _hbb_iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0) * max(ih, 0)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return float(inter / (area - inter))


# ------------------------------------------------------------------------------------ HRSC
def test_hrsc_real_file_fields(shared_data: Path) -> None:
    labels = read_hrsc_xml(shared_data / HRSC)
    assert labels.class_names() == ["ship"] and labels.difficult().tolist() == [0]
    assert labels.gsd == pytest.approx(1.07) and labels.imagesource == "HRSC2016"
    poly = labels.polygons()
    np.testing.assert_allclose(poly, obb_to_poly([[341.2143, 443.3325, 778.4297, 178.2595, -1.122944]]))
    assert shapely.is_valid(shapely.polygons(poly.reshape(4, 2)))
    assert poly_signed_area(poly)[0] == pytest.approx(778.4297 * 178.2595)
    assert read_hrsc_image_size(shared_data / HRSC) == (1172, 816)
    # One corner reaches 17 px below the 816 px image (as annotated); nearly all the box is inside.
    geom = shapely.polygons(poly.reshape(4, 2))
    inside = shapely.area(shapely.intersection(geom, shapely.box(0, 0, 1172, 816))) / shapely.area(geom)
    assert 0.99 < inside < 1


def test_hrsc_angle_sense_from_the_bow_point(shared_data: Path) -> None:
    """mbox_ang turns the box like obb_to_poly (clockwise on screen): the bow (header_x, header_y)
    then lies at an end of the long axis; with the opposite sign it lies nowhere near one."""
    path = shared_data / HRSC
    cx, cy, w, h, ang = (_field(path, t) for t in ("mbox_cx", "mbox_cy", "mbox_w", "mbox_h", "mbox_ang"))
    bow = np.array([_field(path, "header_x"), _field(path, "header_y")])

    def nearest_end(angle: float) -> float:
        axis = np.array([math.cos(angle), math.sin(angle)]) * w / 2
        return float(min(np.linalg.norm(bow - (np.array([cx, cy]) + s * axis)) for s in (1, -1)))

    assert nearest_end(ang) < 0.05 * w  # 35 px from the end of a 778 px ship
    assert nearest_end(-ang) > 0.4 * w  # 367 px: the other sense puts the bow mid-ship
    poly = read_hrsc_xml(path).polygons()[0].reshape(4, 2)
    short_edge_mids = [(poly[1] + poly[2]) / 2, (poly[3] + poly[0]) / 2]
    assert min(np.linalg.norm(bow - m) for m in short_edge_mids) == pytest.approx(nearest_end(ang), abs=1e-6)
    assert shapely.contains_xy(shapely.polygons(poly), *bow)


def test_hrsc_hbb_fields_agree_but_cannot_tell_the_sign(shared_data: Path) -> None:
    path = shared_data / HRSC
    box = np.array([_field(path, t) for t in ("box_xmin", "box_ymin", "box_xmax", "box_ymax")])
    ours = poly_to_hbb(read_hrsc_xml(path).polygons())[0]
    cx, cy, w, h, ang = (_field(path, t) for t in ("mbox_cx", "mbox_cy", "mbox_w", "mbox_h", "mbox_ang"))
    flipped = poly_to_hbb(obb_to_poly([[cx, cy, w, h, -ang]]))[0]
    np.testing.assert_allclose(ours, flipped, atol=1e-9)  # +a and -a: the same external box
    assert _hbb_iou(ours, box) > 0.85
    # The annotated box is not tight: the rotated box reaches beyond it (by up to 44 px here).
    assert (ours[:2] <= box[:2]).all() and (ours[2:] >= box[2:]).all()


def _hrsc_xml(objects: str) -> str:
    return (f"<HRSC_Image><Img_Resolution>abc</Img_Resolution><HRSC_Objects>{objects}</HRSC_Objects>"
            "</HRSC_Image>")


def _hrsc_obj(w: object = 60, h: object = 20, ang: object = 0.5, extra: str = "") -> str:
    return (f"<HRSC_Object><Class_ID>100000005</Class_ID><difficult>0</difficult><mbox_cx>100</mbox_cx>"
            f"<mbox_cy>80</mbox_cy><mbox_w>{w}</mbox_w><mbox_h>{h}</mbox_h><mbox_ang>{ang}</mbox_ang>"
            f"{extra}</HRSC_Object>")


@pytest.mark.parametrize(("obj", "kind"), [
    (_hrsc_obj(w=0), "bad-size"),
    (_hrsc_obj(h=-1), "bad-size"),
    (_hrsc_obj(ang="nan"), "non-finite"),
    (_hrsc_obj().replace("<mbox_ang>0.5</mbox_ang>", ""), "missing-field"),
    (_hrsc_obj().replace("<difficult>0", "<difficult>7"), "bad-difficult"),
])
def test_hrsc_bad_object_reported_and_skipped(tmp_path: Path, obj: str, kind: str) -> None:
    path = tmp_path / "x.xml"
    path.write_text(_hrsc_xml(_hrsc_obj() + "\n" + obj))
    report = LabelReport()
    labels = read_hrsc_xml(path, report=report)
    assert len(labels.objects) == 1 and labels.gsd is None
    assert [(i.kind, i.line) for i in report.issues] == [(kind, 2)]
    assert "object 2" in report.issues[0].message
    with pytest.raises(LabelError, match=r"x\.xml:2: "):
        read_hrsc_xml(path, strict=True)


def test_hrsc_class_map_and_wrong_root(tmp_path: Path) -> None:
    path = tmp_path / "x.xml"
    path.write_text(_hrsc_xml(_hrsc_obj() + _hrsc_obj().replace("100000005", "100000099")))
    report = LabelReport()
    labels = read_hrsc_xml(path, report=report, class_map={"100000005": "aircraft-carrier"})
    assert labels.class_names() == ["aircraft-carrier"]
    assert report.skipped() == Counter({"unknown-class": 1})
    (tmp_path / "voc.xml").write_text("<annotation/>")
    with pytest.raises(XmlError, match="not an HRSC2016 annotation"):
        read_hrsc_xml(tmp_path / "voc.xml")


# ----------------------------------------------------------------------------------- DIOR-R
def test_dior_real_file_against_image(shared_data: Path) -> None:
    import cv2

    labels = read_dior_xml(shared_data / DIOR)
    assert labels.class_names() == ["golffield"] and labels.difficult().tolist() == [0]
    np.testing.assert_array_equal(labels.polygons(), [[133, 237, 684, 237, 684, 672, 133, 672]])
    image = cv2.imread(str(shared_data / "other_formats/dior_r/00001.jpg"))
    assert image is not None
    assert read_dior_image_size(shared_data / DIOR) == (image.shape[1], image.shape[0], image.shape[2])
    poly = labels.polygons()[0]
    assert (poly[0::2] >= 0).all() and (poly[0::2] < image.shape[1]).all()
    assert (poly[1::2] >= 0).all() and (poly[1::2] < image.shape[0]).all()
    assert poly_signed_area(labels.polygons())[0] == (684 - 133) * (672 - 237)


def _dior_obj(corners: list[float], name: str = "ship") -> str:
    tags = ("x_left_top", "y_left_top", "x_right_top", "y_right_top",
            "x_right_bottom", "y_right_bottom", "x_left_bottom", "y_left_bottom")
    inner = "".join(f"<{t}>{v}</{t}>" for t, v in zip(tags, corners))
    return f"<object><name>{name}</name><robndbox>{inner}</robndbox><angle>0</angle></object>"


def test_dior_counter_clockwise_corners_reordered_and_bad_objects(tmp_path: Path) -> None:
    ccw = [10.0, 10, 10, 30, 50, 30, 50, 10]  # corners listed counter-clockwise on screen
    bad = _dior_obj([10.0, 10, 50, 10, 50, 30, 10, 30]).replace("<y_left_bottom>30</y_left_bottom>", "")
    hbb = ("<object><name>tank</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>5</xmax><ymax>9</ymax>"
           "</bndbox></object>")
    dot = _dior_obj([0.0] * 8)
    path = tmp_path / "d.xml"
    path.write_text(f"<annotation>{_dior_obj(ccw)}\n{bad}\n{hbb}\n{dot}</annotation>")
    report = LabelReport()
    labels = read_dior_xml(path, report=report)
    np.testing.assert_array_equal(labels.polygons(),
                                  [[10, 10, 50, 10, 50, 30, 10, 30], [1, 2, 5, 2, 5, 9, 1, 9]])
    assert [(i.kind, i.line) for i in report.issues] == [("missing-field", 2), ("degenerate", 4)]
    labels = read_dior_xml(path, classes=["ship"], report=LabelReport())
    assert labels.class_names() == ["ship"]
    with pytest.raises(LabelError, match=r"d\.xml:2: missing-field: object 2"):
        read_dior_xml(path, strict=True)
