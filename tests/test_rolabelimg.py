"""roLabelImg XML <-> DOTA: real files, hand-derived corners, round trips, bad input, the CLI."""

from __future__ import annotations

import math
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import shapely
from tool_loader import load_tool as _load_tool

from DOTA_devkit.classes import read_class_file, write_class_file
from DOTA_devkit.formats.rolabelimg import (
    build_rolabelimg_xml,
    convert_dota_to_rolabelimg,
    convert_rolabelimg_to_dota,
    find_image,
    index_images,
    parse_rolabelimg,
    polygons_to_robndboxes,
    read_rolabelimg_xml,
    robndbox_to_polygon,
)
from DOTA_devkit.formats.xml_io import XmlError, parse_xml_bytes
from DOTA_devkit.geometry import poly_iou, poly_signed_area
from DOTA_devkit.labels import DotaObject, LabelError, LabelReport, read_dota_label, write_dota_label

REPO = Path(__file__).resolve().parents[1]




cli = _load_tool("convert_rolabelimg")

EXPECTED_OBJECTS = {
    "cgvict_demo/demo.xml": 4,
    "cgvict_demo/demo2.xml": 2,
    "cgvict_demo/demo3.xml": 4,
    "drone/day_chaoxipark_30m_30c_3__frame_1500.xml": 48,
    "drone/night_jimeibudao_30m_30c__frame_2850.xml": 16,
}
DRONE_CLASSES = {"bicycle": 3, "car": 7, "motor": 2, "person": 45, "traffic-sign": 6, "truck": 1}


def _xml(objects: str, filename: str = "img", size: str = "<size><width>100</width><height>80</height>"
         "<depth>3</depth></size>") -> str:
    return f"<annotation><filename>{filename}</filename>{size}{objects}</annotation>"


def _robj(cx: object = 50, cy: object = 40, w: object = 20, h: object = 10, angle: object = 0.3,
          name: str = "car", difficult: str = "<difficult>0</difficult>") -> str:
    return (f"<object><type>robndbox</type><name>{name}</name>{difficult}<robndbox><cx>{cx}</cx>"
            f"<cy>{cy}</cy><w>{w}</w><h>{h}</h><angle>{angle}</angle></robndbox></object>")


def _parse(text: str, **kw: object) -> tuple[list[DotaObject], LabelReport]:
    report = LabelReport()
    ann = parse_rolabelimg(parse_xml_bytes(text.encode(), "mem.xml"), "mem.xml", report=report, **kw)  # type: ignore[arg-type]
    return ann.labels.objects, report


def _match_cyclic(a: np.ndarray, b: np.ndarray) -> float:
    """Max corner distance between two 4-corner polygons, minimised over cyclic shifts of ``b``."""
    pa, pb = a.reshape(4, 2), b.reshape(4, 2)
    return min(float(np.abs(pa - np.roll(pb, k, axis=0)).max()) for k in range(4))


# -------------------------------------------------------------------------------- real files
def test_real_files_object_counts(shared_data: Path) -> None:
    report = LabelReport()
    for rel, n in EXPECTED_OBJECTS.items():
        ann = read_rolabelimg_xml(shared_data / "rolabelimg" / rel, report=report)
        assert len(ann.labels.objects) == n, rel
    assert report.issues == []
    assert report.objects == sum(EXPECTED_OBJECTS.values())
    drone: Counter[str] = Counter()
    for rel in EXPECTED_OBJECTS:
        if rel.startswith("drone/"):
            drone.update(read_rolabelimg_xml(shared_data / "rolabelimg" / rel).labels.class_names())
    assert dict(drone) == DRONE_CLASSES


def test_real_polygons_valid_clockwise_and_exact_area(shared_data: Path) -> None:
    for xml in sorted((shared_data / "rolabelimg").glob("*/*.xml")):
        root_objects = parse_xml_bytes(xml.read_bytes()).findall("object")
        polys = read_rolabelimg_xml(xml).labels.polygons()
        assert len(polys) == len(root_objects)
        geoms = shapely.polygons(polys.reshape(-1, 4, 2))
        assert shapely.is_valid(geoms).all(), xml
        assert (poly_signed_area(polys) > 0).all(), xml  # clockwise on screen (y down)
        for obj, poly in zip(root_objects, polys):
            rob = obj.find("robndbox")
            if rob is not None:
                w, h = float(rob.findtext("w")), float(rob.findtext("h"))  # type: ignore[arg-type]
            else:
                box = obj.find("bndbox")
                w = float(box.findtext("xmax")) - float(box.findtext("xmin"))  # type: ignore[union-attr,arg-type]
                h = float(box.findtext("ymax")) - float(box.findtext("ymin"))  # type: ignore[union-attr,arg-type]
            assert shapely.area(shapely.polygons(poly.reshape(4, 2))) == pytest.approx(w * h, rel=1e-9)


def test_robndbox_corners_match_manifest_formula_by_hand(shared_data: Path) -> None:
    # demo.xml object 3: cx 157, cy 170, w 166, h 56, angle 3.039229 (radians).
    poly = read_rolabelimg_xml(shared_data / "rolabelimg/cgvict_demo/demo.xml").labels.objects[2].polygon
    cx, cy, w, h, a = 157.0, 170.0, 166.0, 56.0, 3.039229
    c, s = math.cos(a), math.sin(a)
    expected = []
    for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)):
        expected += [cx + c * dx - s * dy, cy + s * dx + c * dy]  # R = [[cos, -sin], [sin, cos]]
    np.testing.assert_allclose(poly, expected, atol=1e-9)
    # The angle is ~174 deg (cos = -0.99477, sin = 0.10218): the unrotated TL corner (-83, -28)
    # turns to (0.99477*83 + 0.10218*28, -0.10218*83 + 0.99477*28) = (85.427, 19.372), lower right.
    assert poly[0] == pytest.approx(157 + 85.427, abs=1e-3)
    assert poly[1] == pytest.approx(170 + 19.372, abs=1e-3)


def test_angle_zero_object_by_hand(shared_data: Path) -> None:
    # day_chaoxipark object 2: cx 1061.5, cy 1645.8113, w 43, h 64, angle 0.0.
    xml = shared_data / "rolabelimg/drone/day_chaoxipark_30m_30c_3__frame_1500.xml"
    poly = read_rolabelimg_xml(xml).labels.objects[1].polygon
    np.testing.assert_allclose(poly, [1040, 1613.8113, 1083, 1613.8113, 1083, 1677.8113, 1040, 1677.8113],
                               atol=1e-9)


def test_bndbox_objects_mapped_to_tl_tr_br_bl(shared_data: Path) -> None:
    demo = read_rolabelimg_xml(shared_data / "rolabelimg/cgvict_demo/demo.xml").labels.objects
    assert demo[0].class_name == "dog" and demo[0].difficult == 0
    np.testing.assert_array_equal(demo[0].polygon, [241, 52, 383, 52, 383, 107, 241, 107])
    np.testing.assert_array_equal(demo[1].polygon, [69, 63, 214, 63, 214, 93, 69, 93])
    drone = read_rolabelimg_xml(shared_data / "rolabelimg/drone/day_chaoxipark_30m_30c_3__frame_1500.xml")
    np.testing.assert_array_equal(drone.labels.objects[0].polygon, [2888, 71, 2905, 71, 2905, 94, 2888, 94])


def test_size_and_filename_read(shared_data: Path) -> None:
    import cv2

    ann = read_rolabelimg_xml(shared_data / "rolabelimg/cgvict_demo/demo.xml")
    assert ann.filename == "demo" and ann.size == (512, 290, 3)
    img = cv2.imread(str(shared_data / "rolabelimg/cgvict_demo/demo.png"))
    assert img is not None and ann.size is not None
    assert img.shape[1::-1] == ann.size[:2]


# ------------------------------------------------------------------ regressions of the fork
def test_regression_bndbox_corners_not_self_intersecting() -> None:
    """The fork wrote a plain box as (xmin,ymin) (xmax,ymin) (xmin,ymax) (xmax,ymax): a bow tie."""
    objects, _ = _parse(_xml("<object><name>car</name><bndbox><xmin>10</xmin><ymin>20</ymin>"
                             "<xmax>40</xmax><ymax>35</ymax></bndbox></object>"))
    ours = objects[0].polygon
    fork = np.array([10, 20, 40, 20, 10, 35, 40, 35], dtype=float)
    assert not shapely.is_valid(shapely.polygons(fork.reshape(4, 2)))  # the bug this guards against
    assert shapely.is_valid(shapely.polygons(ours.reshape(4, 2)))
    assert poly_signed_area(ours)[0] == pytest.approx(30 * 15)


def test_regression_float_coordinates_not_truncated(shared_data: Path, tmp_path: Path) -> None:
    """The fork converted robndbox corners with int(): up to 1 px lost per coordinate."""
    src = shared_data / "rolabelimg/cgvict_demo/demo.xml"
    obj = read_rolabelimg_xml(src).labels.objects[3]  # cx 252.5622, cy 174.811
    assert obj.polygon.reshape(4, 2).mean(0) == pytest.approx([252.5622, 174.811], abs=1e-9)
    write_dota_label(tmp_path / "demo.txt", [obj])
    back = read_dota_label(tmp_path / "demo.txt").objects[0].polygon
    np.testing.assert_allclose(back, obj.polygon, atol=5e-4)
    assert np.abs(back - np.trunc(back)).max() > 0.1


# ------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("angle_deg", [0.0, 0.5, 30.0, 45.0, 89.9, 90.0, 90.1, 135.0, 179.5])
@pytest.mark.parametrize("wh", [(40.0, 12.0), (12.0, 40.0), (25.0, 25.0), (3.0, 2.0)])
def test_dota_xml_dota_round_trip_rectangles(angle_deg: float, wh: tuple[float, float]) -> None:
    poly = robndbox_to_polygon(1234.5678, 876.54321, wh[0], wh[1], math.radians(angle_deg))
    xml = build_rolabelimg_xml([DotaObject(poly, "car", 1)], "img", (2000, 1500, 3))
    rob = xml.find("object/robndbox")
    assert rob is not None
    w, h, a = (float(rob.findtext(t)) for t in ("w", "h", "angle"))  # type: ignore[arg-type]
    assert w >= h and 0 <= a < math.pi
    from xml.etree.ElementTree import tostring

    back, report = _parse(tostring(xml, encoding="unicode"))
    assert report.issues == [] and back[0].difficult == 1 and back[0].class_name == "car"
    assert _match_cyclic(poly, back[0].polygon) < 0.01


def test_real_files_round_trip_through_both_converters(shared_data: Path, tmp_path: Path) -> None:
    src = tmp_path / "xml"
    shutil.copytree(shared_data / "rolabelimg/drone", src)
    first = convert_rolabelimg_to_dota(src, tmp_path / "dota", progress=False)
    assert first.written == sorted(p.stem for p in src.glob("*.xml")) and first.images == 2
    assert first.report.issues == [] and first.approximated == 0
    back_xml = convert_dota_to_rolabelimg(tmp_path / "dota", tmp_path / "xml2", progress=False)
    assert back_xml.approximated == 0 and back_xml.images == 2
    assert read_rolabelimg_xml(tmp_path / "xml2" / f"{first.written[0]}.xml").size == (3840, 2160, 3)
    again = convert_rolabelimg_to_dota(tmp_path / "xml2", tmp_path / "dota2", progress=False)
    for stem in first.written:
        a = read_dota_label(tmp_path / "dota/labelTxt" / f"{stem}.txt")
        b = read_dota_label(tmp_path / "dota2/labelTxt" / f"{stem}.txt")
        assert a.class_names() == b.class_names()
        for pa, pb in zip(a.polygons(), b.polygons()):
            assert _match_cyclic(pa, pb) < 0.01
    assert again.classes == first.classes == tuple(sorted(DRONE_CLASSES))


def test_non_rectangular_polygon_becomes_its_min_area_rectangle(shared_data: Path, tmp_path: Path) -> None:
    labels = read_dota_label(shared_data / "dota_examples/labelTxt/P0075.txt")
    polys = labels.polygons()
    boxes = polygons_to_robndboxes(polys)
    rects = np.stack([robndbox_to_polygon(*b) for b in boxes])
    # The rectangle contains the quadrilateral: IoU = area ratio, and the corners stay close.
    assert (poly_iou(polys, rects) > 0.8).all()
    (tmp_path / "labelTxt").mkdir()
    polys[0] = [0, 0, 100, 0, 100, 100, 50, 50]  # a dart: half the area of its rectangle
    write_dota_label(tmp_path / "labelTxt/a.txt",
                     [DotaObject(p, n, 0) for p, n in zip(polys, labels.class_names())])
    out = convert_dota_to_rolabelimg(tmp_path, tmp_path / "xml", labels_only=True, progress=False)
    assert out.approximated >= 1 and out.written == ["a"]


# ------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("obj", "kind"),
    [
        (_robj(cx="nan"), "non-finite"),
        (_robj(w="inf"), "non-finite"),
        (_robj(cy="abc"), "malformed"),
        (_robj(w=0), "bad-size"),
        (_robj(h=-3), "bad-size"),
        (_robj().replace("<angle>0.3</angle>", ""), "missing-field"),
        (_robj().replace("<name>car</name>", ""), "missing-field"),
        (_robj(name="small car"), "bad-class-name"),
        (_robj(difficult="<difficult>3</difficult>"), "bad-difficult"),
        (_robj(difficult="<difficult>yes</difficult>"), "bad-difficult"),
        (_robj().replace("robndbox</type>", "polygon</type>"), "malformed"),
        ("<object><type>robndbox</type><name>car</name></object>", "missing-field"),
        ("<object><name>car</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>5</xmax><ymax>9</ymax>"
         "</bndbox></object>", "bad-size"),
        (_robj(w=0.5, h=0.5), "degenerate"),
    ],
)
def test_bad_object_reported_with_line_and_index_then_skipped(obj: str, kind: str) -> None:
    text = _xml(_robj() + "\n" + obj + "\n" + _robj(name="truck"))
    objects, report = _parse(text)
    assert [o.class_name for o in objects] == ["car", "truck"]
    assert report.objects == 2 and len(report.issues) == 1
    issue = report.issues[0]
    assert issue.kind == kind and issue.path == "mem.xml" and issue.line == 2
    assert "object 2" in issue.message
    assert report.skipped() == Counter({kind: 1})
    with pytest.raises(LabelError, match=r"mem\.xml:2: .*object 2"):
        parse_rolabelimg(parse_xml_bytes(text.encode()), "mem.xml", strict=True)


def test_missing_difficult_is_zero_and_difficult_kept() -> None:
    objects, _ = _parse(_xml(_robj(difficult="") + _robj(difficult="<difficult>1</difficult>")))
    assert [o.difficult for o in objects] == [0, 1]


def test_unknown_class_against_list() -> None:
    objects, report = _parse(_xml(_robj() + _robj(name="boat")), classes=["car"])
    assert len(objects) == 1 and report.skipped() == Counter({"unknown-class": 1})
    assert "'boat'" in report.issues[0].message


def test_malformed_and_wrong_root_raise_xml_error(tmp_path: Path) -> None:
    (tmp_path / "cut.xml").write_text(_xml(_robj())[:-20])
    with pytest.raises(XmlError, match=r"cut\.xml: malformed"):
        read_rolabelimg_xml(tmp_path / "cut.xml")
    (tmp_path / "empty.xml").write_text("")
    with pytest.raises(XmlError, match="empty"):
        read_rolabelimg_xml(tmp_path / "empty.xml")
    (tmp_path / "other.xml").write_text("<HRSC_Image/>")
    with pytest.raises(XmlError, match="HRSC_Image"):
        read_rolabelimg_xml(tmp_path / "other.xml")


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<annotation><filename>&lol9;</filename></annotation>
"""


def _make_xml_folder(tmp_path: Path, shared_data: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(shared_data / "rolabelimg/cgvict_demo", src)
    (src / "bomb.xml").write_text(BILLION_LAUGHS)
    (src / "broken.xml").write_text("<annotation><object>")
    (src / "orphan.xml").write_text(_xml(_robj(), filename="orphan"))  # no image
    shutil.copy(src / "demo.png", src / "bad.png")
    (src / "bad.xml").write_text(_xml(_robj() + _robj(w="nan") + _robj(name="cat"), filename="bad"))
    return src


def test_folder_conversion_reports_and_counts_every_problem(shared_data: Path, tmp_path: Path) -> None:
    src = _make_xml_folder(tmp_path, shared_data)
    out = convert_rolabelimg_to_dota(src, tmp_path / "dst", progress=False)
    assert out.written == ["bad", "demo", "demo2", "demo3"]
    kinds = {(Path(i.path).name, i.kind) for i in out.report.issues}
    assert kinds == {("bomb.xml", "malformed-xml"), ("broken.xml", "malformed-xml"),
                     ("orphan.xml", "missing-image"), ("bad.xml", "non-finite")}
    bomb = next(i for i in out.report.issues if i.path.endswith("bomb.xml"))
    assert "unsafe" in bomb.message and "lol" in bomb.message  # refused, never expanded
    assert out.report.objects == 2 + 10
    assert "2 malformed-xml" in out.report.summary() and "1 missing-image" in out.report.summary()
    assert sorted(p.name for p in (tmp_path / "dst/images").iterdir()) == [
        "bad.png", "demo.png", "demo2.png", "demo3.jpg"]
    assert read_class_file(tmp_path / "dst/classes.txt") == ("car", "cat", "dog", "person", "tv")
    assert next(i for i in out.report.issues if i.path.endswith("broken.xml")).line == 1
    with pytest.raises(LabelError, match=r"bad\.xml:1: non-finite: object 2"):  # the first in name order
        convert_rolabelimg_to_dota(src, tmp_path / "dst2", strict=True, progress=False)
    only_bomb = tmp_path / "bomb"
    only_bomb.mkdir()
    shutil.copy(src / "bomb.xml", only_bomb)
    with pytest.raises(LabelError, match=r"bomb\.xml:0: malformed-xml: unsafe XML refused"):
        convert_rolabelimg_to_dota(only_bomb, tmp_path / "dst3", strict=True, labels_only=True,
                                   progress=False)


def test_class_file_checked_when_present_created_when_absent(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "rolabelimg/cgvict_demo"
    created = tmp_path / "made/classes.txt"
    out = convert_rolabelimg_to_dota(src, tmp_path / "a", classes_file=created, progress=False)
    assert read_class_file(created) == ("cat", "dog", "person", "tv") == out.classes
    write_class_file(tmp_path / "mine.txt", ["person", "dog"])
    out = convert_rolabelimg_to_dota(src, tmp_path / "b", classes_file=tmp_path / "mine.txt", progress=False)
    assert out.report.skipped() == Counter({"unknown-class": 2})  # cat, tv
    assert out.report.per_class == Counter({"dog": 4, "person": 4})
    assert read_class_file(tmp_path / "b/classes.txt") == ("person", "dog")  # the given order kept
    with pytest.raises(LabelError, match="unknown-class"):
        convert_rolabelimg_to_dota(src, tmp_path / "c", classes_file=tmp_path / "mine.txt", strict=True,
                                   progress=False)


def test_images_elsewhere_linked_or_copied(shared_data: Path, tmp_path: Path) -> None:
    xml_dir, img_dir = tmp_path / "xml", tmp_path / "img"
    xml_dir.mkdir()
    img_dir.mkdir()
    shutil.copy(shared_data / "rolabelimg/cgvict_demo/demo2.xml", xml_dir / "first.xml")
    shutil.copy(shared_data / "rolabelimg/cgvict_demo/demo2.png", img_dir / "demo2.PNG")  # via <filename>
    linked = convert_rolabelimg_to_dota(xml_dir, tmp_path / "l", image_dir=img_dir, link=True, progress=False)
    assert linked.images == 1
    dst = tmp_path / "l/images/first.PNG"
    assert os.path.samefile(dst, img_dir / "demo2.PNG")
    convert_rolabelimg_to_dota(xml_dir, tmp_path / "c", image_dir=img_dir, progress=False)
    copied = tmp_path / "c/images/first.PNG"
    assert not os.path.samefile(copied, img_dir / "demo2.PNG")
    assert copied.read_bytes() == (img_dir / "demo2.PNG").read_bytes()
    assert not list((tmp_path / "c/images").glob(".*tmp"))


def test_find_image_by_stem_then_filename(tmp_path: Path) -> None:
    for name in ("a.jpg", "a.png", "b.TIF", "c.d.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    index = index_images(tmp_path)
    assert sorted(index) == ["a", "b", "c.d"] and index["a"].name == "a.png"
    assert find_image(index, "zzz", "C:\\data\\b.TIF") == tmp_path / "b.TIF"
    assert find_image(index, "zzz", "c.d") == tmp_path / "c.d.png"
    assert find_image(index, "zzz", "missing") is None


def test_converted_folder_loads_in_the_dataset(shared_data: Path, tmp_path: Path) -> None:
    from bbavectors.data.dataset import DotaDataset

    convert_rolabelimg_to_dota(shared_data / "rolabelimg/cgvict_demo", tmp_path, progress=False)
    ds = DotaDataset(tmp_path, split=None)  # classes from the written classes.txt
    assert len(ds) == 3 and sum(ds.class_counts().values()) == 10


# ------------------------------------------------------------------------------------ CLI
def test_cli_both_directions(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--src", str(shared_data / "rolabelimg/cgvict_demo"), "--dst", str(tmp_path / "d"),
                     "--quiet"]) == 0
    assert "wrote 3 file(s), 3 image(s)" in capsys.readouterr().out
    assert cli.main(["--to-xml", "--src", str(tmp_path / "d/labelTxt"), "--dst", str(tmp_path / "x"),
                     "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == [
        "demo.png", "demo.xml", "demo2.png", "demo2.xml", "demo3.jpg", "demo3.xml"]
    src = _make_xml_folder(tmp_path, shared_data)
    assert cli.main(["--src", str(src), "--dst", str(tmp_path / "s"), "--strict", "--quiet"]) == 2
    assert "bad.xml" in capsys.readouterr().err
    assert cli.main(["--src", str(tmp_path / "nothing"), "--dst", str(tmp_path / "n"), "--quiet"]) == 2


def test_docs_worked_example_by_hand() -> None:
    # docs/custom_data.md section 5: cos 30 = 0.8660, sin 30 = 0.5; TL = c + R (-20, -10)
    # = (100 - 17.32 + 5, 50 - 10 - 8.66).
    poly = robndbox_to_polygon(100, 50, 40, 20, math.pi / 6)
    np.testing.assert_allclose(poly, [87.679, 31.340, 122.321, 51.340, 112.321, 68.660, 77.679, 48.660],
                               atol=1e-3)
