"""DOTA_devkit.split: windows, cutting labels, one scene, a data set with bad inputs, the CLI."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import shapely

from DOTA_devkit.geometry import poly_area, poly_signed_area
from DOTA_devkit.labels import DotaObject, read_dota_label, write_dota_label
from DOTA_devkit.split import (
    ClipCounts,
    SplitOptions,
    cut_objects,
    reduce_to_quad,
    sliding_windows,
    split_dataset,
    split_scene,
    window_starts,
)

REPO = Path(__file__).resolve().parents[1]


def box(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float64)


def dota_reference_windows(height: int, width: int, subsize: int, gap: int) -> list[tuple[int, int]]:
    """The window loop of DOTA's ImgSplit.SplitSingle, transcribed."""
    slide = subsize - gap
    out = []
    left = 0
    while left < width:
        if left + subsize >= width:
            left = max(width - subsize, 0)
        up = 0
        while up < height:
            if up + subsize >= height:
                up = max(height - subsize, 0)
            out.append((left, up))
            if up + subsize >= height:
                break
            up = up + slide
        if left + subsize >= width:
            break
        left = left + slide
    return out


# ----------------------------------------------------------------------------------- windows
def test_window_starts_hand_values() -> None:
    assert window_starts(1111, 608, 100) == [0, 503]  # P0706's width: last window moved back
    assert window_starts(1116, 608, 100) == [0, 508]
    assert window_starts(1117, 608, 100) == [0, 508, 509]
    assert window_starts(608, 608, 100) == [0]
    assert window_starts(451, 608, 100) == [0]  # smaller than a window
    assert window_starts(4000, 1024, 200) == [0, 824, 1648, 2472, 2976]


@pytest.mark.parametrize("h, w", [(1, 1), (607, 608), (609, 1500), (839, 451), (4000, 3000), (1182, 1111)])
def test_windows_equal_dota_and_cover_every_pixel(h: int, w: int) -> None:
    wins = sliding_windows(h, w, 608, 100)
    assert wins == dota_reference_windows(h, w, 608, 100)
    covered = np.zeros((h, w), dtype=bool)
    for left, up in wins:
        assert left >= 0 and up >= 0
        covered[up:up + 608, left:left + 608] = True
    assert covered.all()
    if w >= 608 and h >= 608:
        assert max(left for left, _ in wins) == w - 608  # the last window ends at the border
        assert max(up for _, up in wins) == h - 608
    if h <= 608 and w <= 608:
        assert wins == [(0, 0)]


def test_window_arguments_are_checked() -> None:
    for subsize, gap in [(608, 608), (608, -1), (0, 0)]:
        with pytest.raises(ValueError, match="gap"):
            sliding_windows(100, 100, subsize, gap)
    with pytest.raises(ValueError, match="positive"):
        sliding_windows(0, 100, 608, 100)


# ----------------------------------------------------------------------------------- cutting labels
WINDOW = (100.0, 200.0, 708.0, 808.0)


def cut(poly: np.ndarray, difficult: int = 0, thresh: float = 0.7) -> tuple[list[DotaObject], ClipCounts]:
    counts = ClipCounts()
    return cut_objects([DotaObject(poly, "plane", difficult)], WINDOW, thresh, counts), counts


def test_regression_whole_object_is_shifted_only_float_kept() -> None:
    """DOTA's ImgSplit truncates patch coordinates with int(); ours stay float."""
    out, counts = cut(box(150.5, 250, 190, 270), difficult=1)
    assert counts.whole == 1 and counts.cut == 0
    np.testing.assert_array_equal(out[0].polygon, box(50.5, 50, 90, 70))
    assert out[0].difficult == 1


def test_object_on_the_window_border_is_whole() -> None:
    out, counts = cut(box(100, 200, 708, 808))
    assert counts.whole == 1
    np.testing.assert_array_equal(out[0].polygon, box(0, 0, 608, 608))


@pytest.mark.parametrize("inside_fraction, expected_difficult", [(0.8, 1), (0.7, 2), (0.5, 2)])
def test_cut_box_keeps_difficult_only_above_thresh(inside_fraction: float, expected_difficult: int) -> None:
    # 100 px wide box, inside_fraction of it left of the window's right border x = 708.
    x0 = 708 - 100 * inside_fraction
    out, counts = cut(box(x0, 300, x0 + 100, 320), difficult=1)
    assert counts.cut == 1
    assert out[0].difficult == expected_difficult
    np.testing.assert_allclose(out[0].polygon, box(x0 - 100, 100, 608, 120), atol=1e-9)
    assert poly_area(out[0].polygon)[0] == pytest.approx(100 * inside_fraction * 20)


def test_cut_piece_starts_near_the_objects_first_corner_and_keeps_orientation() -> None:
    for poly in (np.array([700, 320, 700, 300, 750, 300, 750, 320], dtype=np.float64),  # one orientation
                 np.array([700, 320, 750, 320, 750, 300, 700, 300], dtype=np.float64)):  # the other
        out, _ = cut(poly)
        q = out[0].polygon
        np.testing.assert_allclose(q[:2], [600, 120])  # the object's first corner (700, 320), shifted
        assert np.sign(poly_signed_area(q)[0]) == np.sign(poly_signed_area(poly)[0])
        assert poly_area(q)[0] == pytest.approx(8 * 20)


def test_regression_triangle_piece_is_kept_with_its_area() -> None:
    # A diamond (centre 740, 300) whose left corner (690, 300) pokes into the window (x <= 708): the
    # piece inside is a triangle, base 36 px along x = 708, height 18 px. DOTA drops it.
    diamond = np.array([690, 300, 740, 250, 790, 300, 740, 350], dtype=np.float64)
    out, counts = cut(diamond)
    assert counts.cut_triangles == 1 and counts.cut == 1
    assert poly_area(out[0].polygon)[0] == pytest.approx(0.5 * 36 * 18)
    assert out[0].difficult == 2  # 324 of 5000 px^2 inside
    pts = out[0].polygon.reshape(4, 2)
    np.testing.assert_allclose(sorted(map(tuple, pts)), [(590, 100), (608, 82), (608, 100), (608, 118)])


def _piece(poly: np.ndarray) -> shapely.Geometry:
    return shapely.intersection(shapely.polygons(poly.reshape(4, 2)), shapely.box(*WINDOW))


@pytest.mark.parametrize("poly, corners", [
    # One corner beyond x = 708: the piece has 5 corners.
    (np.array([680, 300, 720, 310, 690, 350, 660, 330], dtype=np.float64), 5),
    # Right corner beyond x = 708 and bottom corner beyond y = 808: 6 corners.
    (np.array([640, 780, 680, 740, 720, 780, 680, 820], dtype=np.float64), 6),
])
def test_regression_five_and_six_corner_pieces_are_reduced_not_dropped(poly: np.ndarray,
                                                                      corners: int) -> None:
    piece = _piece(poly)
    assert len(piece.exterior.coords) - 1 == corners
    out, c = cut(poly)
    assert c.cut == 1 and (c.cut_five, c.cut_six_plus) == ((1, 0) if corners == 5 else (0, 1))
    q = out[0].polygon.reshape(4, 2) + [WINDOW[0], WINDOW[1]]
    piece_pts = np.asarray(piece.exterior.coords)[:-1]
    for p in q:  # only corners of the piece: the result stays inside the window
        assert np.min(np.abs(piece_pts - p).sum(axis=1)) < 1e-9
    kept = poly_area(q.reshape(1, 8))[0]
    best_subset = max(poly_area(piece_pts[list(c)].reshape(1, 8))[0]
                      for c in itertools.combinations(range(corners), 4))
    if corners == 5:  # removing the corner with the smallest triangle is the best choice of 4 corners
        assert kept == pytest.approx(best_subset)
    assert best_subset >= kept >= 0.8 * piece.area


def test_reduce_to_quad_hand_values() -> None:
    # A 10 x 10 square with a 1 x 1 corner cut off (99.5 px^2): the corners (10, 9) and (9, 10) both span
    # a 4.5 px^2 triangle with their neighbours, the others 50: (10, 9) (the first) goes, 95 px^2 remain.
    pent = np.array([[0, 0], [10, 0], [10, 9], [9, 10], [0, 10]], dtype=np.float64)
    q = reduce_to_quad(pent)
    np.testing.assert_array_equal(q, [[0, 0], [10, 0], [9, 10], [0, 10]])
    assert poly_area(q.reshape(1, 8))[0] == pytest.approx(95)
    tri = np.array([[0, 0], [4, 0], [0, 3]], dtype=np.float64)
    q = reduce_to_quad(tri)
    np.testing.assert_allclose(q, [[0, 0], [4, 0], [2, 1.5], [0, 3]])  # midpoint of the longest edge
    assert poly_area(q.reshape(1, 8))[0] == pytest.approx(6)
    ang = np.arange(8) * np.pi / 4
    octo = np.stack([np.cos(ang), np.sin(ang)], 1) * 10
    q = reduce_to_quad(octo)
    assert all(any(np.allclose(p, o) for o in octo) for p in q)
    with pytest.raises(ValueError):
        reduce_to_quad(np.zeros((2, 2)))


def test_touching_and_tiny_pieces_are_dropped_and_counted() -> None:
    _, c = cut(box(708, 300, 750, 320))  # only its left edge lies on the border
    assert c.touching == 1 and c.cut == 0
    _, c = cut(box(707.99, 300, 750, 320))  # 0.01 x 20 px inside: under 1 px^2
    assert c.tiny == 1 and c.cut == 0
    out, c = cut(box(900, 900, 950, 950))  # far away: not in the patch at all
    assert out == [] and c == ClipCounts()


def test_bow_tie_label_is_cut_as_its_hull() -> None:
    bow = np.array([600, 300, 800, 320, 800, 300, 600, 320], dtype=np.float64)
    out, c = cut(bow)
    assert c.cut == 1
    assert poly_area(out[0].polygon)[0] == pytest.approx(108 * 20)


# ----------------------------------------------------------------------------------- scenes
def make_scene(root: Path, name: str, h: int, w: int, objects: list[DotaObject], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labelTxt").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "images" / f"{name}.png"), img)
    write_dota_label(root / "labelTxt" / f"{name}.txt", objects, imagesource="GoogleEarth", gsd=0.5)
    return img


def test_split_scene_patches_and_labels(tmp_path: Path) -> None:
    objs = [DotaObject(box(10, 10, 50, 30), "plane", 0),  # in the left windows only
            DotaObject(box(500, 500, 560, 540), "ship", 1),  # in the overlap of the windows
            DotaObject(box(780, 10, 800, 30), "small-vehicle", 0)]
    img = make_scene(tmp_path / "src", "S1", 700, 800, objs)
    (tmp_path / "dst" / "images").mkdir(parents=True)
    (tmp_path / "dst" / "labelTxt").mkdir(parents=True)
    opts = SplitOptions(subsize=608, gap=100, rates=(1.0, 0.5))
    res = split_scene(tmp_path / "src/images/S1.png", tmp_path / "src/labelTxt/S1.txt", tmp_path / "dst",
                      opts)
    assert res.error is None
    names = sorted(p.stem for p in (tmp_path / "dst/images").iterdir())
    assert names == sorted(["S1__1__0___0", "S1__1__0___92", "S1__1__192___0", "S1__1__192___92",
                            "S1__0.5__0___0"])
    assert res.patches == 5
    patch = cv2.imread(str(tmp_path / "dst/images/S1__1__192___92.png"))
    np.testing.assert_array_equal(patch, img[92:700, 192:800])
    small = cv2.imread(str(tmp_path / "dst/images/S1__0.5__0___0.png"))
    assert small.shape == (608, 608, 3)
    assert not small[350:].any() and not small[:, 400:].any()  # 350 x 400 scene, zero padding
    lab = read_dota_label(tmp_path / "dst/labelTxt/S1__1__192___92.txt")
    assert lab.gsd == 0.5 and lab.imagesource == "GoogleEarth"
    assert [o.class_name for o in lab.objects] == ["ship"]
    np.testing.assert_allclose(lab.objects[0].polygon, box(308, 408, 368, 448))
    top_right = read_dota_label(tmp_path / "dst/labelTxt/S1__1__192___0.txt")
    assert [(o.class_name, o.difficult) for o in top_right.objects] == [("ship", 1), ("small-vehicle", 0)]
    np.testing.assert_allclose(top_right.objects[1].polygon, box(588, 10, 608, 30))
    half = read_dota_label(tmp_path / "dst/labelTxt/S1__0.5__0___0.txt")
    assert half.gsd == 1.0
    np.testing.assert_allclose(half.objects[0].polygon, box(5, 5, 25, 15))


def test_regression_object_on_the_last_pixel_column_is_not_cut(tmp_path: Path) -> None:
    """DOTA's label window ends at W - 1: an object reaching the scene's right border is cut (and may be
    marked difficult 2) in every patch. Ours ends at W."""
    make_scene(tmp_path / "src", "E", 300, 300, [DotaObject(box(250, 100, 300, 140), "ship", 0)])
    s = split_dataset(tmp_path / "src", tmp_path / "dst", SplitOptions(subsize=608, gap=100), progress=False)
    assert (s.counts.whole, s.counts.cut) == (1, 0)
    lab = read_dota_label(tmp_path / "dst/labelTxt/E__1__0___0.txt")
    np.testing.assert_array_equal(lab.objects[0].polygon, box(250, 100, 300, 140))


def test_dataset_with_bad_inputs_and_workers(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_scene(src, "A", 300, 700, [DotaObject(box(550, 10, 650, 50), "plane", 0)])
    make_scene(src, "B", 200, 200, [])
    (src / "images" / "broken.png").write_bytes(b"not a png at all")
    (src / "labelTxt" / "broken.txt").write_text("0 0 10 0 10 10 0 10 plane 0\n")
    (src / "labelTxt" / "orphan.txt").write_text("0 0 10 0 10 10 0 10 plane 0\n")
    cv2.imwrite(str(src / "images" / "nolabel.png"), np.zeros((50, 50, 3), np.uint8))
    with open(src / "labelTxt" / "A.txt", "a") as f:
        f.write("1 2 3 plane\n")
    opts = SplitOptions(subsize=256, gap=56, drop_empty=True)
    s1 = split_dataset(src, tmp_path / "out1", opts, progress=False)
    assert s1.scenes == 2
    assert len(s1.unreadable) == 1 and "broken.png" in s1.unreadable[0]
    assert [Path(p).name for p in s1.labels_without_image] == ["orphan.txt"]
    assert [Path(p).name for p in s1.images_without_label] == ["nolabel.png"]
    assert len(s1.labels.issues) == 1 and s1.labels.issues[0].line == 4
    text = s1.format()
    for needle in ("broken.png", "orphan.txt", "nolabel.png", "A.txt:4", "empty patch(es) dropped"):
        assert needle in text
    kept = sorted(p.stem for p in (tmp_path / "out1/labelTxt").iterdir())
    # A: windows x 0, 200, 400, 444 (width 700) and y 0, 44 (height 300); the plane (x 550..650,
    # y 10..50) is in the last two columns, cut at y = 44 in the second row. B has no object.
    assert kept == ["A__1__400___0", "A__1__400___44", "A__1__444___0", "A__1__444___44"]
    assert sorted(p.stem for p in (tmp_path / "out1/images").iterdir()) == kept
    s2 = split_dataset(src, tmp_path / "out2", SplitOptions(subsize=256, gap=56, drop_empty=True),
                       workers=2, progress=False)
    assert s2.patches == s1.patches and s2.counts == s1.counts
    for name in kept:
        assert (tmp_path / "out1/labelTxt" / f"{name}.txt").read_text() == \
            (tmp_path / "out2/labelTxt" / f"{name}.txt").read_text()


def test_unlabelled_scenes_in_a_non_ascii_folder(tmp_path: Path) -> None:
    src, dst = tmp_path / "données" / "场景", tmp_path / "sortie"
    (src / "images").mkdir(parents=True)
    ok, buf = cv2.imencode(".jpg", np.full((100, 700, 3), 7, np.uint8))
    buf.tofile(src / "images" / "T1.jpg")
    s = split_dataset(src, dst, SplitOptions(subsize=608, gap=100), progress=False)
    assert s.patches == 2 and s.num_problems == 0
    written = sorted(p.name for p in (dst / "images").iterdir())
    assert written == ["T1__1__0___0.png", "T1__1__92___0.png"]
    assert not (dst / "labelTxt").exists()
    assert "objects:" not in s.format()
    with pytest.raises(FileNotFoundError):
        split_dataset(tmp_path / "nothing", tmp_path / "dst")


def test_cli(tmp_path: Path) -> None:
    make_scene(tmp_path / "src", "C", 300, 300, [DotaObject(box(10, 10, 60, 40), "plane", 0)])
    cmd = [sys.executable, str(REPO / "tools" / "split_dota.py"), "--src", str(tmp_path / "src"),
           "--dst", str(tmp_path / "dst"), "--subsize", "200", "--gap", "50", "--rates", "1.0", "0.5",
           "--quiet"]
    run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "split 1 scene(s) into 5 patch(es)" in run.stdout
    assert (tmp_path / "dst/images/C__0.5__0___0.png").is_file()
    bad = subprocess.run(cmd[:3] + [str(tmp_path / "missing"), "--dst", str(tmp_path / "x")],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "error:" in bad.stderr


def test_regression_object_wholly_outside_the_image_is_counted(tmp_path: Path) -> None:
    """'labels: 4 object(s) kept' then 'dropped: 0': an object outside the scene vanished silently."""
    objects = [DotaObject(box(10, 10, 60, 40), "plane", 0),  # whole
               DotaObject(box(280, 100, 340, 140), "ship", 0),  # cut by the scene's border
               DotaObject(box(400, 400, 450, 450), "ship", 0),  # wholly outside the 300x300 scene
               DotaObject(box(100, 100, 101.5, 101), "plane", 0)]  # 1.5 px^2, 0.375 at rate 0.5
    make_scene(tmp_path / "src", "O", 300, 300, objects)
    s = split_dataset(tmp_path / "src", tmp_path / "dst", SplitOptions(subsize=200, gap=50, rates=(1.0, 0.5)),
                      progress=False)
    g = s.ledger
    assert (g.objects_in, g.in_patches, g.outside_image, g.tiny) == (8, 5, 2, 1) and g.balanced()
    assert s.labels.objects == 4
    assert "objects in: 8 (kept labels x rates) = 5 in patches + 2 outside the image + 1 under 1 px^2" \
        in s.format()


@pytest.mark.parametrize("where", ["same", "images", "labels"])
def test_regression_destination_inside_the_source_is_refused(tmp_path: Path, where: str) -> None:
    src = tmp_path / "src"
    make_scene(src, "C", 100, 100, [DotaObject(box(10, 10, 60, 40), "plane", 0)])
    before = sorted(p.relative_to(src) for p in src.rglob("*"))
    dst = {"same": src / ".." / "src", "images": src / "images", "labels": src / "labelTxt" / "out"}[where]
    with pytest.raises(ValueError, match="--dst"):
        split_dataset(src, dst, SplitOptions(subsize=64, gap=8), progress=False)
    assert sorted(p.relative_to(src) for p in src.rglob("*")) == before
    assert split_dataset(src, src / "patches", SplitOptions(subsize=64, gap=8), progress=False).patches == 4
