"""Split -> merge -> evaluate on real DOTA scenes (read-only shared data, copied nowhere).

P0706 (1111 x 1182, 536 objects, ships and harbors) cut into 608 px patches with gap 100: every patch
label lies inside its patch; the objects that lie entirely inside some window come back from the
patch labels exactly; emitted as detections of score 1, merged (rotated NMS across the overlapping
windows) and evaluated against the scene's labels, they score mAP 1.0 on the classes present.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from DOTA_devkit.eval import evaluate_task1
from DOTA_devkit.labels import LabelFile, read_dota_label
from DOTA_devkit.merge import merge_detections, parse_patch_name
from DOTA_devkit.split import SplitOptions, sliding_windows, split_dataset
from DOTA_devkit.task1 import ClassDetections

SUBSIZE, GAP = 608, 100


@pytest.fixture(scope="module")
def split_p0706(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    src = tmp_path_factory.mktemp("src")
    for sub in ("images", "labelTxt"):
        (src / sub).mkdir()
    examples = shared_data / "dota_examples"
    for scene in ("P0706", "P0075"):  # temporary copies, outside the repository
        shutil.copy(examples / "images" / f"{scene}.png", src / "images")
        shutil.copy(examples / "labelTxt" / f"{scene}.txt", src / "labelTxt")
    dst = tmp_path_factory.mktemp("dst")
    summary = split_dataset(src, dst, SplitOptions(subsize=SUBSIZE, gap=GAP), progress=False)
    assert summary.num_problems == 0 and summary.scenes == 2
    return src, dst


def windows_fitting(poly: np.ndarray, h: int, w: int) -> list[tuple[int, int]]:
    xs, ys = poly[0::2], poly[1::2]
    out = []
    for left, up in sliding_windows(h, w, SUBSIZE, GAP):
        if (xs.min() >= left and xs.max() <= min(left + SUBSIZE, w)
                and ys.min() >= up and ys.max() <= min(up + SUBSIZE, h)):
            out.append((left, up))
    return out


def test_patches_and_labels_inside(split_p0706: tuple[Path, Path], shared_data: Path) -> None:
    src, dst = split_p0706
    scene = cv2.imread(str(src / "images" / "P0706.png"))
    h, w = scene.shape[:2]
    assert (h, w) == (1182, 1111)
    names = sorted(p.stem for p in (dst / "images").glob("P0706__*.png"))
    assert names == sorted(f"P0706__1__{left}___{up}" for left, up in sliding_windows(h, w, SUBSIZE, GAP))
    assert len(names) == 6  # x 0, 503; y 0, 508, 574
    for name in names:
        _, _, left, up = parse_patch_name(name)
        patch = cv2.imread(str(dst / "images" / f"{name}.png"))
        np.testing.assert_array_equal(patch, scene[up:up + SUBSIZE, left:left + SUBSIZE])
        labels = read_dota_label(dst / "labelTxt" / f"{name}.txt", strict=True)
        p = labels.polygons()
        assert len(p) > 0
        assert p.min() >= -1e-6 and p.max() <= SUBSIZE + 1e-6
    small = cv2.imread(str(dst / "images" / "P0075__1__0___231.png"))  # 451 px wide: zero padded
    assert small.shape == (608, 608, 3) and not small[:, 451:].any()


def test_split_merge_evaluate_round_trip(split_p0706: tuple[Path, Path]) -> None:
    src, dst = split_p0706
    scene_labels = read_dota_label(src / "labelTxt" / "P0706.txt")
    h, w = 1182, 1111
    polys = scene_labels.polygons()
    fits = [bool(windows_fitting(p, h, w)) for p in polys]
    assert len(polys) == 536 and sum(fits) == 532  # 4 objects are larger than any overlap

    # Patch labels that are whole objects (not cut pieces): a scene object shifted by the window.
    found: dict[str, list[tuple[str, np.ndarray]]] = {}
    for path in sorted((dst / "labelTxt").glob("P0706__*.txt")):
        _, _, left, up = parse_patch_name(path.stem)
        for obj in read_dota_label(path).objects:
            scene_poly = obj.polygon + np.tile([left, up], 4)
            match = np.flatnonzero(np.abs(polys - scene_poly).max(axis=1) < 1e-6)
            if len(match) and windows_fitting(polys[match[0]], h, w):
                found.setdefault(obj.class_name, []).append((path.stem, obj.polygon))
                assert obj.difficult == scene_labels.objects[match[0]].difficult
                assert (left, up) in windows_fitting(polys[match[0]], h, w)
    patch_dets = {name: ClassDetections([i for i, _ in v], np.ones(len(v)), np.array([p for _, p in v]))
                  for name, v in found.items()}
    # Objects in the overlap of two windows appear in both patches ...
    assert sum(len(d) for d in patch_dets.values()) > 532
    merged = merge_detections(patch_dets, nms_thresh=0.1)
    # ... and the merge keeps exactly one of each: every fitting object, each once, exactly.
    assert sum(len(d) for d in merged.values()) == 532
    recovered = set()
    for name, d in merged.items():
        for poly in d.polygons:
            k = int(np.argmin(np.abs(polys - poly).max(axis=1)))
            assert np.abs(polys[k] - poly).max() < 1e-6 and scene_labels.objects[k].class_name == name
            recovered.add(k)
    assert recovered == {k for k, f in enumerate(fits) if f}

    gt = {"P0706": LabelFile([o for o, f in zip(scene_labels.objects, fits) if f])}
    classes = ("plane", "ship", "harbor", "small-vehicle")
    result = evaluate_task1(merged, gt, classes)
    assert result.classes_with_gt == ["ship", "harbor"]
    assert result.map07_present == pytest.approx(1.0, abs=1e-12)
    assert result.map_area_present == 1.0
    assert all(result.per_class[c].recall == 1.0 for c in ("ship", "harbor"))
    # Against all 536 objects the 4 that never fit a window are missed.
    full = evaluate_task1(merged, {"P0706": scene_labels}, classes)
    assert full.per_class["ship"].recall < 1.0 or full.per_class["harbor"].recall < 1.0
