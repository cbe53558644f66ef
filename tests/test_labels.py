"""DOTA labelTxt parsing / writing (DOTA_devkit.labels) and class lists (DOTA_devkit.classes)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from DOTA_devkit.classes import (
    DOTA_V1_0,
    DOTA_V1_5,
    DOTA_V2_0,
    HRSC2016,
    SYNTHETIC,
    load_class_list,
    read_class_file,
    write_class_file,
)
from DOTA_devkit.labels import (
    DotaObject,
    LabelError,
    LabelReport,
    format_dota_line,
    parse_dota_lines,
    read_dota_label,
    write_dota_label,
)

# Counted by hand from the files (class = 9th field of every object line; see MANIFEST.md).
EXPECTED = {
    "dota_examples": {
        "files": {"P0075": 2, "P0168": 36, "P0706": 536, "P0770": 22, "P1088": 34, "P1888": 64},
        "classes": {"baseball-diamond": 2, "ground-track-field": 1, "harbor": 5, "helicopter": 9,
                    "large-vehicle": 53, "plane": 49, "roundabout": 1, "ship": 531, "small-vehicle": 23,
                    "swimming-pool": 10, "tennis-court": 10},
    },
    "dota_demo": {
        # P1478 patch: 295 lines, 2 of them zero-area polygons (skipped as degenerate).
        "files": {"P0003": 55, "P0004": 107, "P0005": 130, "P1478__1__853___962": 293},
        "classes": {"large-vehicle": 258, "small-vehicle": 327},
    },
}
SQUARE = "10 10 20 10 20 20 10 20"


def _parse(lines: list[str], **kw: object) -> tuple[list[DotaObject], LabelReport]:
    report = LabelReport()
    lf = parse_dota_lines(lines, "x.txt", report=report, **kw)  # type: ignore[arg-type]
    return lf.objects, report


# ------------------------------------------------------------------------------- real files
@pytest.mark.parametrize("folder", sorted(EXPECTED))
def test_every_real_label_file_parses_with_exact_counts(shared_data: Path, folder: str) -> None:
    report = LabelReport()
    per_file = {p.stem: len(read_dota_label(p, DOTA_V1_0, report=report).objects)
                for p in sorted((shared_data / folder / "labelTxt").glob("*.txt"))}
    assert per_file == EXPECTED[folder]["files"]
    assert dict(report.per_class) == EXPECTED[folder]["classes"]
    assert report.files == len(per_file) and report.objects == sum(per_file.values())
    if folder == "dota_demo":
        assert [(Path(i.path).name, i.line, i.kind) for i in report.issues] == [
            ("P1478__1__853___962.txt", 2, "degenerate"), ("P1478__1__853___962.txt", 3, "degenerate")]
    else:
        assert report.issues == []


def test_real_ssdd_labels(shared_data: Path) -> None:
    report = LabelReport()
    files = sorted((shared_data / "ssdd_rbox_train/labelTxt").glob("*.txt"))
    for p in files:
        read_dota_label(p, HRSC2016, report=report)
    assert len(files) == 928 and report.objects == 2017 and report.per_class == Counter({"ship": 2017})
    assert report.issues == []


def test_real_headers_crlf_and_difficult(shared_data: Path) -> None:
    path = shared_data / "dota_examples/labelTxt/P0075.txt"
    assert b"\r\n" in path.read_bytes()
    lf = read_dota_label(path)
    assert lf.imagesource == "GoogleEarth" and lf.gsd == pytest.approx(0.139152881468)
    assert lf.class_names() == ["swimming-pool", "roundabout"]  # no trailing "\r"
    np.testing.assert_array_equal(lf.polygons()[0], [218, 108, 249, 101, 260, 146, 224, 150])
    patch = read_dota_label(shared_data / "dota_demo/labelTxt/P1478__1__853___962.txt")
    assert patch.imagesource is None and Counter(patch.difficult().tolist()) == Counter({0: 287, 1: 3, 2: 3})
    assert read_dota_label(shared_data / "dota_examples/labelTxt/P0706.txt").difficult().sum() == 6


# ------------------------------------------------------------------------------ parsing rules
def test_headers_and_missing_difficult() -> None:
    lf = parse_dota_lines(["imagesource:GoogleEarth", "gsd:null", f"{SQUARE} plane", f"{SQUARE} ship 1",
                           "", "   "])
    assert lf.imagesource == "GoogleEarth" and lf.gsd is None
    assert lf.difficult().tolist() == [0, 1] and lf.class_names() == ["plane", "ship"]
    assert parse_dota_lines(["gsd:0.5"]).gsd == 0.5


def test_crlf_bom_and_tabs(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbfimagesource:GE\r\ngsd:0.1\r\n1.5\t2 3 2 3 4 1.5 4 plane 0\r\n")
    lf = read_dota_label(path)
    assert lf.imagesource == "GE" and lf.gsd == 0.1 and lf.class_names() == ["plane"]
    np.testing.assert_array_equal(lf.polygons(), [[1.5, 2, 3, 2, 3, 4, 1.5, 4]])


@pytest.mark.parametrize(("line", "kind"), [
    ("10 10 20 10 20 20 10 plane 0", "malformed"),  # 8 fields
    (f"{SQUARE} plane 0 extra", "malformed"),  # 11 fields
    ("plane", "malformed"),
    ("10 10 20 ten 20 20 10 20 plane 0", "malformed"),
    ("10 10 20 nan 20 20 10 20 plane 0", "non-finite"),
    ("10 10 20 10 inf 20 10 20 plane 0", "non-finite"),
    ("10 10 20 10 20 20 10 -inf plane 0", "non-finite"),
    (f"{SQUARE} airplane 0", "unknown-class"),
    ("10 10 10 10 10 10 10 10 plane 0", "degenerate"),  # a point
    ("10 10 20 10 30 10 40 10 plane 0", "degenerate"),  # a segment
    ("10 10 10.5 10 10.5 10.5 10 10.5 plane 0", "degenerate"),  # 0.25 px^2 < 1
    (f"{SQUARE} plane 3", "bad-difficult"),
    (f"{SQUARE} plane -1", "bad-difficult"),
    (f"{SQUARE} plane x", "bad-difficult"),
])
def test_bad_line_reported_with_file_and_line_skipped_and_counted(line: str, kind: str) -> None:
    lines = ["imagesource:x", f"{SQUARE} plane 0", line, f"{SQUARE} ship 2"]
    objects, report = _parse(lines, classes=DOTA_V1_0)
    assert [o.class_name for o in objects] == ["plane", "ship"]
    assert report.objects == 2 and report.per_class == Counter({"plane": 1, "ship": 1})
    assert [(i.path, i.line, i.kind) for i in report.issues] == [("x.txt", 3, kind)]
    assert str(report.issues[0]).startswith(f"x.txt:3: {kind}: ")
    assert report.summary() == f"1 label file(s), 2 object(s) kept, skipped: 1 {kind}"
    with pytest.raises(LabelError, match=f"^x.txt:3: {kind}: "):
        parse_dota_lines(lines, "x.txt", classes=DOTA_V1_0, strict=True)


def test_exactly_area_one_is_kept() -> None:
    objects, report = _parse(["0 0 1 0 1 1 0 1 plane"])
    assert len(objects) == 1 and report.issues == []


def test_report_merge_and_summary(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text(f"{SQUARE} plane\n{SQUARE} ship 5\n")
    (tmp_path / "b.txt").write_text(f"{SQUARE} plane\n1 2 3\n")
    total = LabelReport()
    for name in ("a.txt", "b.txt"):
        r = LabelReport()
        read_dota_label(tmp_path / name, report=r)
        total.merge(r)
    assert (total.files, total.objects) == (2, 2) and total.per_class == Counter({"plane": 2})
    assert total.summary() == "2 label file(s), 2 object(s) kept, skipped: 1 bad-difficult, 1 malformed"
    assert [(Path(i.path).name, i.line) for i in total.issues] == [("a.txt", 2), ("b.txt", 2)]


def test_class_ids_and_unknown_class() -> None:
    lf = parse_dota_lines([f"{SQUARE} ship", f"{SQUARE} plane 1"])
    assert lf.class_ids(DOTA_V1_0).tolist() == [6, 0]
    assert lf.class_ids(DOTA_V1_0).dtype == np.int64 and lf.difficult().dtype == np.int64
    with pytest.raises(KeyError):
        lf.class_ids(HRSC2016)
    assert parse_dota_lines([]).polygons().shape == (0, 8)


# ------------------------------------------------------------------------------------ writing
def test_write_read_round_trip_keeps_floats_to_a_thousandth(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    polys = rng.uniform(-50, 4000, size=(50, 8))
    polys[:, [0, 1, 3, 6]] = polys[:, [0, 1, 3, 6]].round()  # integers mixed in
    polys[0] = [0, 0, 100, 0, 100, 50, 0, 50]
    names = [SYNTHETIC[k % 5] for k in range(50)]
    objects = [DotaObject(p, n, k % 3) for k, (p, n) in enumerate(zip(polys, names))]
    # Random points may make degenerate polygons: keep only those the reader would keep.
    objects = [o for o in objects if parse_dota_lines([format_dota_line(o.polygon, o.class_name)]).objects]
    path = tmp_path / "out.txt"
    write_dota_label(path, objects, imagesource="GoogleEarth", gsd=0.146343590398)
    text = path.read_text()
    assert text.splitlines()[:3] == ["imagesource:GoogleEarth", "gsd:0.146343590398",
                                     "0 0 100 0 100 50 0 50 plane 0"]
    back = read_dota_label(path)
    assert back.imagesource == "GoogleEarth" and back.gsd == pytest.approx(0.146343590398)
    assert back.class_names() == [o.class_name for o in objects]
    assert back.difficult().tolist() == [o.difficult for o in objects]
    np.testing.assert_allclose(back.polygons(), np.stack([o.polygon for o in objects]), atol=5e-4, rtol=0)
    assert "\r" not in text and text.endswith("\n")
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temporary file left


def test_format_line_by_hand_and_rejects() -> None:
    assert format_dota_line([1, 2.5, 3.1234, 4, 5, 6, 7, 8.0004], "small-vehicle", 1) == \
        "1 2.5 3.123 4 5 6 7 8 small-vehicle 1"
    with pytest.raises(ValueError, match="8 numbers"):
        format_dota_line([1, 2, 3], "plane")
    with pytest.raises(ValueError, match="whitespace"):
        format_dota_line(np.zeros(8), "small vehicle")


# ------------------------------------------------------------------------------- class lists
def test_known_class_lists() -> None:
    assert len(DOTA_V1_0) == 15 and len(DOTA_V1_5) == 16 and len(DOTA_V2_0) == 18 and len(HRSC2016) == 1
    assert DOTA_V1_5[-1] == "container-crane" and DOTA_V2_0[-2:] == ("airport", "helipad")
    for names in (DOTA_V1_0, DOTA_V1_5, DOTA_V2_0, SYNTHETIC):
        assert len(set(names)) == len(names)
    assert load_class_list("DOTA1.0") == DOTA_V1_0 and load_class_list("hrsc2016") == ("ship",)
    with pytest.raises(ValueError, match="unknown class list"):
        load_class_list("dota3.0")


def test_user_class_file(tmp_path: Path) -> None:
    path = tmp_path / "classes.txt"
    path.write_text("# my classes\n\nplane\n  ship  # boats too\r\nsmall-vehicle\n")
    assert read_class_file(path) == ("plane", "ship", "small-vehicle") == load_class_list(path)
    write_class_file(tmp_path / "copy.txt", ["b", "a"])
    assert read_class_file(tmp_path / "copy.txt") == ("b", "a")


@pytest.mark.parametrize(("text", "match"), [
    ("plane\nship\nplane\n", r"classes\.txt:3: duplicate class name 'plane'"),
    ("plane\nsmall vehicle\n", r"classes\.txt:2: class name 'small vehicle' contains whitespace"),
    ("# nothing\n\n", "empty"),
])
def test_bad_user_class_file(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "classes.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_class_file(path)


def test_class_file_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "classes.txt"
    path.write_bytes(b"\xef\xbb\xbfplane\r\nship\r\n")
    assert read_class_file(path) == ("plane", "ship")


def test_fast_path_equals_careful_parser_on_real_files(shared_data: Path) -> None:
    """read_dota_label's vectorised path for clean files must give what parse_dota_lines gives."""
    from DOTA_devkit.labels import LabelReport, parse_dota_lines, read_dota_label

    files = sorted(shared_data.glob("dota_*/labelTxt/*.txt"))
    files += sorted(shared_data.glob("ssdd_rbox_train/labelTxt/*.txt"))[:50]
    for f in files:
        fast_report, slow_report = LabelReport(), LabelReport()
        fast = read_dota_label(f, report=fast_report)
        slow = parse_dota_lines(f.read_text(encoding="utf-8-sig").splitlines(), str(f), report=slow_report)
        np.testing.assert_array_equal(fast.polygons(), slow.polygons())
        assert fast.class_names() == slow.class_names()
        assert fast.difficult().tolist() == slow.difficult().tolist()
        assert (fast.imagesource, fast.gsd) == (slow.imagesource, slow.gsd)
        assert (fast_report.objects, fast_report.files, len(fast_report.issues)) == (
            slow_report.objects, slow_report.files, len(slow_report.issues))


# ----------------------------------------------------------------------- issue 10: bad coordinates
def test_regression_absurd_coordinates_are_bad_lines_not_nan_areas(tmp_path: Path) -> None:
    """1e200 made the shoelace area NaN, ``NaN < 1`` is false and the polygon was kept."""
    lines = ["1e200 0 1e200 1 0 1 0 0 plane 0", "-2e6 10 20 10 20 20 10 20 plane 0", f"{SQUARE} ship 0"]
    objects, report = _parse(lines)
    assert [o.class_name for o in objects] == ["ship"]
    assert [(i.line, i.kind) for i in report.issues] == [(1, "out-of-range"), (2, "out-of-range")]
    path = tmp_path / "big.txt"
    path.write_text("\n".join(lines) + "\n")
    fast_report = LabelReport()
    assert read_dota_label(path, report=fast_report).class_names() == ["ship"]  # also in the fast reader
    assert str(fast_report.issues[0]).startswith(f"{path}:1: out-of-range: ")
    assert _parse(["1e6 0 1e6 10 999990 10 999990 0 plane 0"])[1].issues == []  # the bound itself is fine


def test_regression_bow_tie_rectangle_is_repaired_and_counted(tmp_path: Path) -> None:
    """TL, TR, BL, BR (a converter fork's order) was rejected as 'degenerate: area 0'."""
    objects, report = _parse(["10 10 50 10 10 30 50 30 plane 0", "50 10 10 30 10 10 50 30 ship 1"])
    np.testing.assert_array_equal(objects[0].polygon, [10, 10, 50, 10, 50, 30, 10, 30])
    np.testing.assert_array_equal(objects[1].polygon, [50, 10, 10, 10, 10, 30, 50, 30])
    assert report.issues == [] and report.objects == 2
    assert [(r.line, r.kind) for r in report.repairs] == [(1, "bow-tie"), (2, "bow-tie")]
    assert report.summary() == "1 label file(s), 2 object(s) kept (2 repaired: bow-tie corner order)"
    # A rotated rectangle with rounded integer corners, written as a bow-tie.
    rotated = "100 50 150 79 85 76 135 105"
    objects, report = _parse([f"{rotated} plane 0"])
    assert len(objects) == 1 and len(report.repairs) == 1
    path = tmp_path / "b.txt"
    path.write_text("10 10 50 10 10 30 50 30 plane 0\n")
    total = LabelReport()
    read_dota_label(path, report=total)
    merged = LabelReport()
    merged.merge(total)
    assert len(merged.repairs) == 1 and str(merged.repairs[0]) == f"{path}:1: bow-tie: " \
        "rectangle corners reordered into ring order"


def test_self_intersecting_non_rectangle_is_a_bad_line(tmp_path: Path) -> None:
    line = "0 0 40 0 10 30 50 20 plane 0"  # edges 2 and 4 cross, no order is a rectangle
    objects, report = _parse([line, f"{SQUARE} ship 0"])
    assert [o.class_name for o in objects] == ["ship"]
    assert [(i.line, i.kind) for i in report.issues] == [(1, "self-intersecting")]
    path = tmp_path / "s.txt"
    path.write_text(f"{line}\n{SQUARE} ship 0\n")
    assert read_dota_label(path).class_names() == ["ship"]  # the fast reader hands it to the careful one
    with pytest.raises(LabelError, match="s.txt:1: self-intersecting"):
        read_dota_label(path, strict=True)


def test_regression_latin1_line_is_reported_not_turned_into_a_class(tmp_path: Path) -> None:
    path = tmp_path / "l.txt"
    path.write_bytes(f"{SQUARE} plane 0\n".encode() + f"{SQUARE} avi\u00f3n 0\n".encode("latin-1")
                     + f"{SQUARE} ship 0\n".encode())
    report = LabelReport()
    lf = read_dota_label(path, report=report)
    assert lf.class_names() == ["plane", "ship"] and report.per_class == Counter({"plane": 1, "ship": 1})
    assert [(i.line, i.kind) for i in report.issues] == [(2, "not-utf8")]
    assert str(report.issues[0]).startswith(f"{path}:2: not-utf8: not UTF-8")
    assert report.files == 1
    with pytest.raises(LabelError, match="l.txt:2: not-utf8"):
        read_dota_label(path, strict=True)


def test_fast_reader_agrees_with_the_careful_parser_on_random_quadrilaterals(tmp_path: Path) -> None:
    """Convex, concave, bow-tie and collinear quads: the vectorised reader either accepts a file
    exactly as parse_dota_lines does or hands it over."""
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 6))
        coords = rng.integers(0, 12, (n, 8)).astype(float)
        if trial % 3 == 0:  # rectangles, some in bow-tie order
            x0, y0, w, h = rng.integers(0, 50, 4) + 2
            rect = np.array([x0, y0, x0 + w, y0, x0 + w, y0 + h, x0, y0 + h], dtype=float)
            coords = np.stack([rect[[0, 1, 2, 3, 6, 7, 4, 5]] if k % 2 else rect for k in range(n)])
        lines = [" ".join(f"{v:g}" for v in c) + " plane 0" for c in coords]
        path = tmp_path / f"{trial}.txt"
        path.write_text("\n".join(lines) + "\n")
        fast_report, slow_report = LabelReport(), LabelReport()
        fast = read_dota_label(path, report=fast_report)
        slow = parse_dota_lines(lines, str(path), report=slow_report)
        np.testing.assert_array_equal(fast.polygons(), slow.polygons())
        assert [str(i) for i in fast_report.issues] == [str(i) for i in slow_report.issues]
        assert [str(i) for i in fast_report.repairs] == [str(i) for i in slow_report.repairs]
