"""DOTA_devkit.merge: patch names (the contract with the split tool), mapping back, NMS across patches."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from DOTA_devkit.geometry import poly_iou
from DOTA_devkit.merge import (
    format_rate,
    merge_detections,
    parse_patch_name,
    patch_name,
    patch_to_scene,
    scene_ids,
)
from DOTA_devkit.task1 import ClassDetections, read_task1_dir, write_task1_dir

REPO = Path(__file__).resolve().parents[1]


def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


@pytest.mark.parametrize("name, expected", [
    ("P0001__1__0___0", ("P0001", 1.0, 0, 0)),
    ("P0001__0.5__412___824", ("P0001", 0.5, 412, 824)),
    ("P0001__1.0__508___1016", ("P0001", 1.0, 508, 1016)),
    ("my__scene__1.5__10___20", ("my__scene", 1.5, 10, 20)),  # ids may contain "__"
])
def test_parse_patch_name(name: str, expected: tuple[str, float, int, int]) -> None:
    assert parse_patch_name(name) == expected


@pytest.mark.parametrize("name", ["P0001", "P0001__1__0__0", "P0001__x__0___0", "P0001__1__-5___0",
                                  "__1__0___0", "P0001__0__0___0"])
def test_parse_patch_name_rejects_other_names(name: str) -> None:
    with pytest.raises(ValueError, match="patch name|rate must be positive"):
        parse_patch_name(name)


def test_rate_formatting_follows_dota() -> None:
    # DOTA writes str(rate) of the 1 / 0.5 it is given: "1", "0.5" (docs/design.md "Formats" examples).
    assert [format_rate(r) for r in (1, 1.0, 2.0, 0.5, 1.5, 0.25)] == ["1", "1", "2", "0.5", "1.5", "0.25"]
    assert patch_name("P0001", 1.0, 0, 0) == "P0001__1__0___0"
    assert patch_name("P0001", 0.5, 412, 824) == "P0001__0.5__412___824"
    for rate in (1.0, 0.5, 1.5, 0.3):
        assert parse_patch_name(patch_name("a__b", rate, 7, 9)) == ("a__b", rate, 7, 9)
    with pytest.raises(ValueError):
        format_rate(0)
    with pytest.raises(ValueError):
        patch_name("P1", 1.0, -1, 0)


def test_scene_ids_in_order_of_appearance() -> None:
    assert scene_ids(["B__1__0___0", "A__0.5__0___0", "B__1__508___0"]) == ["B", "A"]


def test_mapping_back_with_rate() -> None:
    poly = np.array([box(10, 20, 30, 40)], dtype=np.float64)
    # (x + left) / rate: (10 + 100) / 0.5 = 220, (20 + 50) / 0.5 = 140 ...
    np.testing.assert_allclose(patch_to_scene(poly, 0.5, 100, 50), [box(220, 140, 260, 180)])
    merged = merge_detections({"plane": ClassDetections(["S__0.5__100___50"], [0.9], poly)})
    np.testing.assert_allclose(merged["plane"].polygons, [box(220, 140, 260, 180)])
    assert merged["plane"].image_ids == ["S"]


def test_same_object_in_two_patches_gives_one_detection() -> None:
    # An object at scene x 520..560 seen by the windows at left 0 and left 508 (gap 100).
    dets = ClassDetections(["S__1__0___0", "S__1__508___0"], [0.8, 0.9],
                           [box(520, 10, 560, 30), box(12.5, 10, 52, 30)])
    merged = merge_detections({"ship": dets})["ship"]
    assert merged.image_ids == ["S"]
    np.testing.assert_allclose(merged.scores, [0.9])  # the higher score survives
    np.testing.assert_allclose(merged.polygons, [box(520.5, 10, 560, 30)])


def test_classes_and_scenes_do_not_suppress_each_other() -> None:
    same = box(0, 0, 10, 10)
    dets = {
        "plane": ClassDetections(["A__1__0___0", "B__1__0___0"], [0.9, 0.8], [same, same]),
        "ship": ClassDetections(["A__1__0___0"], [0.7], [same]),
    }
    merged = merge_detections(dets)
    assert merged["plane"].image_ids == ["A", "B"]
    assert merged["ship"].image_ids == ["A"]


def test_threshold_is_strict_and_configurable() -> None:
    a, b = box(0, 0, 10, 10), box(6, 0, 16, 10)  # IoU 40 / 160 = 0.25
    assert poly_iou(np.array([a]), np.array([b]))[0] == pytest.approx(0.25)
    dets = {"plane": ClassDetections(["S__1__0___0", "S__1__0___0"], [0.9, 0.8], [a, b])}
    assert len(merge_detections(dets)["plane"]) == 1  # default 0.1: suppressed
    assert len(merge_detections(dets, nms_thresh=0.25)["plane"]) == 2  # not > 0.25: kept
    assert len(merge_detections(dets, nms_thresh=0.2)["plane"]) == 1
    with pytest.raises(ValueError):
        merge_detections(dets, nms_thresh=1.5)


def test_non_patch_ids_are_rejected_clearly() -> None:
    with pytest.raises(ValueError, match="P0001.png"):
        merge_detections({"plane": ClassDetections(["P0001.png"], [0.5], [box(0, 0, 5, 5)])})


def test_empty_classes_stay() -> None:
    merged = merge_detections({"plane": ClassDetections.empty()})
    assert list(merged) == ["plane"] and len(merged["plane"]) == 0


def test_many_patches_vs_per_scene_reference() -> None:
    """Random detections over 3 scenes and 2 rates vs a plain per-scene loop."""
    rng = np.random.default_rng(0)
    names, polys, scores = [], [], []
    for _ in range(300):
        scene = f"S{rng.integers(0, 3)}"
        rate = [1.0, 0.5][rng.integers(0, 2)]
        left, up = (int(v) for v in rng.integers(0, 3, 2) * 508)
        x, y = rng.uniform(0, 560, 2)
        w, h = rng.uniform(5, 40, 2)
        names.append(patch_name(scene, rate, left, up))
        polys.append(box(x, y, x + w, y + h))
        scores.append(round(float(rng.random()), 2))
    dets = ClassDetections(names, scores, polys)
    merged = merge_detections({"plane": dets}, nms_thresh=0.3)["plane"]
    from DOTA_devkit.geometry import rotated_nms
    for scene in ("S0", "S1", "S2"):
        idx = [i for i, n in enumerate(names) if n.startswith(scene + "__")]
        scene_polys = np.array([patch_to_scene(np.array([polys[i]]), *parse_patch_name(names[i])[1:])[0]
                                for i in idx])
        keep = rotated_nms(scene_polys, np.array(scores)[idx], 0.3)
        got = [i for i, n in enumerate(merged.image_ids) if n == scene]
        np.testing.assert_allclose(merged.polygons[got], scene_polys[keep])
        np.testing.assert_allclose(merged.scores[got], np.array(scores)[idx][keep])


def test_cli_round_trip(tmp_path: Path) -> None:
    dets = ClassDetections(["S__1__0___0", "S__1__508___0"], [0.8, 0.9],
                           [box(520, 10, 560, 30), box(12, 10, 52, 30)])
    write_task1_dir(tmp_path / "patches", {"ship": dets}, ["ship", "plane"])
    cmd = [sys.executable, str(REPO / "tools" / "merge_dota.py"), "--det-dir", str(tmp_path / "patches"),
           "--out", str(tmp_path / "scenes"), "--zip", str(tmp_path / "t.zip")]
    run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "merged 2 patch detection(s) into 1 scene detection(s)" in run.stdout
    got = read_task1_dir(tmp_path / "scenes")
    assert set(got) == {"ship", "plane"} and got["ship"].image_ids == ["S"]
    assert (tmp_path / "t.zip").is_file()
    bad = subprocess.run(cmd[:3] + [str(tmp_path / "nope"), "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "error:" in bad.stderr
