"""DOTA_devkit.eval: hand-computed APs, agreement with a transcription of DOTA's evaluator
(tests/eval_reference.py), the fast polygon IoU, files, JSON, pictures and the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from eval_reference import reference_map
from eval_reference import voc_ap as reference_voc_ap

from DOTA_devkit.eval import (
    EvalTimings,
    evaluate_task1,
    evaluate_task1_dirs,
    read_imageset,
    voc_ap,
    write_pr_curves,
)
from DOTA_devkit.geometry import obb_to_poly, poly_iou
from DOTA_devkit.labels import DotaObject, LabelFile, write_dota_label
from DOTA_devkit.polygon_clip import quad_iou, quad_iou_fast_mask
from DOTA_devkit.task1 import ClassDetections, write_task1_dir

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("plane", "ship", "harbor")


def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def labels(*objects: tuple[list[float], str, int]) -> LabelFile:
    return LabelFile([DotaObject(np.array(p, dtype=np.float64), c, d) for p, c, d in objects])


def dets(*items: tuple[str, float, list[float]]) -> ClassDetections:
    if not items:
        return ClassDetections.empty()
    return ClassDetections([i for i, _, _ in items], [s for _, s, _ in items], [p for _, _, p in items])


# ----------------------------------------------------------------------------------- hand-computed APs
def test_one_tp_one_fp_one_miss() -> None:
    gt = {"I1": labels((box(0, 0, 10, 10), "plane", 0), (box(50, 50, 60, 60), "plane", 0))}
    d = {"plane": dets(("I1", 0.9, box(0, 0, 10, 10.5)), ("I1", 0.8, box(100, 100, 110, 110)))}
    r = evaluate_task1(d, gt, CLASSES).per_class["plane"]
    # rec = [0.5, 0.5], prec = [1, 0.5]: thresholds 0 .. 0.5 see precision 1 -> 6 / 11.
    assert r.ap07 == pytest.approx(6 / 11, abs=1e-15)
    # Area: recall 0 -> 0.5 at precision 1, then nothing: 0.5.
    assert r.ap_area == pytest.approx(0.5, abs=1e-15)
    assert (r.num_gt, r.num_det, r.num_tp, r.recall) == (2, 2, 1, 0.5)


def test_detection_on_a_difficult_object_counts_neither_way() -> None:
    gt = {"I1": labels((box(0, 0, 10, 10), "ship", 1), (box(50, 50, 60, 60), "ship", 0))}
    d = {"ship": dets(("I1", 0.9, box(0, 0, 10, 10)), ("I1", 0.8, box(50, 50, 60, 60)))}
    r = evaluate_task1(d, gt, CLASSES).per_class["ship"]
    # tp = [0, 1], fp = [0, 0]; npos = 1: rec = [0, 1], prec = [0, 1] -> AP 1 both ways (AP07 is 11
    # times 1 / 11 summed in floats, as DOTA: 1.0000000000000002).
    assert (r.ap07, r.ap_area) == (pytest.approx(1.0, abs=1e-15), 1.0)
    assert (r.num_gt, r.num_difficult, r.num_tp) == (1, 1, 1)


def test_difficult_2_is_difficult_like_dota() -> None:
    gt = {"I1": labels((box(0, 0, 10, 10), "ship", 2), (box(50, 50, 60, 60), "ship", 0))}
    d = {"ship": dets(("I1", 0.9, box(0, 0, 10, 10)), ("I1", 0.8, box(50, 50, 60, 60)))}
    r = evaluate_task1(d, gt, CLASSES).per_class["ship"]
    assert (r.ap07, r.num_gt, r.num_difficult) == (pytest.approx(1.0, abs=1e-15), 1, 1)


def test_image_without_ground_truth_and_two_detections_on_one_object() -> None:
    gt = {"I1": labels((box(0, 0, 10, 10), "plane", 0)), "I2": LabelFile()}
    d = {"plane": dets(("I2", 0.95, box(0, 0, 10, 10)),  # FP: nothing in I2
                       ("I1", 0.9, box(0, 0, 10, 10)),  # TP
                       ("I1", 0.8, box(0, 0, 10, 10)))}  # FP: already detected
    r = evaluate_task1(d, gt, CLASSES).per_class["plane"]
    # rec = [0, 1, 1], prec = [0, 0.5, 1/3]: every threshold sees max precision 0.5.
    assert r.ap07 == pytest.approx(0.5, abs=1e-15)
    assert r.ap_area == pytest.approx(0.5, abs=1e-15)
    assert r.num_tp == 1


def test_iou_threshold_is_strict() -> None:
    gt = {"I1": labels((box(0, 0, 10, 20), "plane", 0))}
    exactly_half = {"plane": dets(("I1", 0.9, box(0, 0, 10, 10)))}  # IoU 100 / 200 = 0.5
    assert evaluate_task1(exactly_half, gt, CLASSES).per_class["plane"].ap07 == 0.0
    above = {"plane": dets(("I1", 0.9, box(0, 0, 10, 10.5)))}
    assert evaluate_task1(above, gt, CLASSES).per_class["plane"].ap07 == pytest.approx(1.0, abs=1e-15)


def test_duplicate_ground_truth_goes_to_the_first_in_file_order() -> None:
    # DOTA's argmax picks the first of equal IoUs: the second detection finds it taken -> FP.
    gt = {"I1": labels((box(0, 0, 10, 10), "plane", 0), (box(0, 0, 10, 10), "plane", 0))}
    d = {"plane": dets(("I1", 0.9, box(0, 0, 10, 10)), ("I1", 0.8, box(0, 0, 10, 10)))}
    r = evaluate_task1(d, gt, CLASSES).per_class["plane"]
    assert (r.num_tp, r.recall) == (1, 0.5)


def test_classes_without_detections_or_ground_truth_and_both_means() -> None:
    gt = {"I1": labels((box(0, 0, 10, 10), "plane", 0), (box(20, 20, 30, 30), "ship", 0))}
    d = {"plane": dets(("I1", 0.9, box(0, 0, 10, 10))),
         "harbor": dets(("I1", 0.5, box(40, 40, 50, 50)))}  # no harbor in the ground truth
    res = evaluate_task1(d, gt, CLASSES)
    assert res.per_class["plane"].ap07 == pytest.approx(1.0, abs=1e-15)
    assert res.per_class["ship"].ap07 == 0.0 and res.per_class["ship"].num_det == 0
    assert res.per_class["ship"].recall == 0.0
    h = res.per_class["harbor"]
    assert (h.ap07, h.ap_area, h.num_gt) == (0.0, 0.0, 0) and math.isnan(h.recall)
    assert res.map07 == pytest.approx(1 / 3)  # DOTA: over the whole list
    assert res.map07_present == pytest.approx(1 / 2)  # plane and ship have ground truth
    table = res.format_table()
    assert "mAP (DOTA, all 3 classes)" in table and "mAP (classes with GT, n=2)" in table
    data = json.loads(json.dumps(res.to_dict()))
    assert data["per_class"]["harbor"]["recall"] is None
    assert data["map07"] == pytest.approx(1 / 3) and data["num_classes_with_gt"] == 2


def test_unknown_images_raise_unless_ignored() -> None:
    gt = {"I1": labels((box(0, 0, 10, 10), "plane", 0))}
    d = {"plane": dets(("I1", 0.9, box(0, 0, 10, 10)), ("ZZ", 0.95, box(0, 0, 10, 10)))}
    with pytest.raises(ValueError, match="ZZ"):
        evaluate_task1(d, gt, CLASSES)
    res = evaluate_task1(d, gt, CLASSES, ignore_unknown_images=True)
    assert res.num_ignored_detections == 1
    assert res.per_class["plane"].ap07 == pytest.approx(1.0, abs=1e-15)


def test_voc_ap_matches_dotas_loops() -> None:
    rng = np.random.default_rng(0)
    for n in (0, 1, 5, 200):
        rec = np.sort(rng.random(n))
        prec = rng.random(n)
        for use07 in (True, False):
            assert voc_ap(rec, prec, use07) == reference_voc_ap(rec, prec, use07)


# ----------------------------------------------------------------------------------- vs the reference
def random_obb(rng: np.random.Generator) -> np.ndarray:
    return np.array([*rng.uniform(0, 300, 2), rng.uniform(8, 60), rng.uniform(6, 30), rng.uniform(0, np.pi)])


def random_case(seed: int, n_img: int = 12, n_obj: int = 15, n_fp: int = 8, ties: bool = True
                ) -> tuple[dict[str, ClassDetections], dict[str, LabelFile], tuple[str, ...]]:
    rng = np.random.default_rng(seed)
    classes = ("plane", "ship", "small-vehicle", "harbor", "helicopter")  # helicopter: never in GT
    gt: dict[str, LabelFile] = {}
    out: dict[str, list[tuple[str, float, list[float]]]] = {c: [] for c in classes}
    for i in range(n_img):
        iid = f"I{i:03d}"
        objs = []
        n = 0 if i % 5 == 4 else n_obj  # some images without ground truth
        for _ in range(n):
            obb = random_obb(rng)
            name = classes[rng.integers(0, 3)] if rng.random() > 0.05 else "unlisted-class"
            poly = obb_to_poly(obb)[0]
            objs.append(DotaObject(poly, name, int(rng.choice([0, 0, 0, 1, 2]))))
            if name in classes and rng.random() < 0.85:
                for _ in range(rng.integers(1, 3)):  # sometimes two detections on one object
                    j = rng.normal(0, 0.12, 5)
                    jit = obb + [j[0] * obb[2], j[1] * obb[3], j[2] * obb[2], j[3] * obb[3], j[4]]
                    score = round(float(rng.uniform(0.3, 1)), 1 if ties else 6)
                    out[name].append((iid, score, list(obb_to_poly(jit)[0])))
        for _ in range(n_fp):
            obb = random_obb(rng)
            c = classes[rng.integers(0, 5)]
            score = round(float(rng.uniform(0, 0.7)), 1 if ties else 6)
            out[c].append((iid, score, list(obb_to_poly(obb)[0])))
        gt[iid] = LabelFile(objs)
    return {c: dets(*v) for c, v in out.items()}, gt, classes


@pytest.mark.parametrize("seed, ties", [(0, True), (1, True), (2, False), (3, True), (4, False)])
def test_agrees_with_the_dota_transcription(seed: int, ties: bool) -> None:
    d, gt, classes = random_case(seed, ties=ties)
    ours = evaluate_task1(d, gt, classes)
    ap07, ap_area, map07 = reference_map(d, gt, classes)
    for c in classes:
        assert ours.per_class[c].ap07 == pytest.approx(ap07[c], abs=1e-9), c
        if ours.per_class[c].num_gt > 0:  # without ground truth DOTA's area AP is NaN, ours 0
            assert ours.per_class[c].ap_area == pytest.approx(ap_area[c], abs=1e-9), c
    assert ours.map07 == pytest.approx(map07, abs=1e-9)
    assert ours.per_class["helicopter"].num_gt == 0 and ours.per_class["helicopter"].num_det > 0


def test_regression_equal_scores_are_ordered_like_dota() -> None:
    """Equal scores: DOTA sorts with np.argsort(-confidence) (numpy's default kind, not stable), and
    the order of tied detections changes the AP. Ours must use DOTA's very order."""
    rng = np.random.default_rng(7)
    gt = {"I1": labels(*[(box(20 * k, 0, 20 * k + 10, 10), "plane", 0) for k in range(30)])}
    items = []
    for k in range(60):  # 30 true positives and 30 false positives, all with score 0.5
        x = 20 * k if k < 30 else 1000 + 20 * k
        items.append(("I1", 0.5, box(x, 0, x + 10, 10)))
    d = {"plane": dets(*[items[i] for i in rng.permutation(60)])}
    ours = evaluate_task1(d, gt, CLASSES).per_class["plane"]
    ref07, ref_area, _ = reference_map(d, gt, CLASSES)
    assert ours.ap07 == ref07["plane"] and ours.ap_area == ref_area["plane"]
    # The same detections in a stable order (made explicit with distinct scores) give another AP
    # whenever numpy's default sort is not stable here (it is not on this machine: SIMD sorts).
    scores = d["plane"].scores
    stable_order = np.argsort(-scores, kind="stable")
    stable = d["plane"].select(stable_order)
    stable.scores[:] = 1 - np.arange(60) * 1e-3
    other = evaluate_task1({"plane": stable}, gt, CLASSES).per_class["plane"]
    if np.array_equal(np.argsort(-scores), stable_order):
        assert other.ap_area == ours.ap_area
    else:
        assert other.ap_area != ours.ap_area


def test_larger_random_case_agrees() -> None:
    d, gt, classes = random_case(11, n_img=40, n_obj=40, n_fp=30, ties=False)
    ours = evaluate_task1(d, gt, classes)
    ap07, _, map07 = reference_map(d, gt, classes)
    assert ours.map07 == pytest.approx(map07, abs=1e-9)


# ----------------------------------------------------------------------------------- fast polygon IoU
def test_quad_iou_equals_shapely_on_many_configurations() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    obb = np.c_[rng.uniform(0, 100, (n, 2)), rng.uniform(1, 80, n), rng.uniform(1, 40, n),
                rng.uniform(0, 3.2, n)]
    a = obb_to_poly(obb)
    b = obb_to_poly(obb + rng.normal(0, 5, obb.shape))
    b[::3] = b[::3].reshape(-1, 4, 2)[:, ::-1].reshape(-1, 8)  # the other orientation
    cases = [
        (a, b),
        (a, a.copy()),  # identical: shared edges
        (a, a[:, [2, 3, 4, 5, 6, 7, 0, 1]]),  # identical, other start corner
        (rng.uniform(0, 10, (n, 8)), rng.uniform(0, 10, (n, 8))),  # non-convex, bow-ties
        (np.array([box(0, 0, 10, 10)] * 4), np.array([box(10, 0, 20, 10), box(2, 2, 5, 5), box(5, 0, 15, 10),
                                                      box(20, 20, 30, 30)])),  # touching, inside, grid, apart
    ]
    for pa, pb in cases:
        np.testing.assert_allclose(quad_iou(pa, pb), poly_iou(pa, pb), rtol=0, atol=1e-12)
    assert quad_iou_fast_mask(a, b).mean() > 0.99  # generic pairs take the vectorised formula
    assert not quad_iou_fast_mask(a, a).any()  # shared edges go to shapely
    half_shift = quad_iou(np.array([box(0, 0, 10, 10)]), np.array([box(5, 0, 15, 10)]))
    np.testing.assert_allclose(half_shift, [1 / 3])


# ----------------------------------------------------------------------------------- files and CLI
def write_case(root: Path, d: dict[str, ClassDetections], gt: dict[str, LabelFile],
               classes: tuple[str, ...]) -> None:
    (root / "labelTxt").mkdir(parents=True)
    for iid, lf in gt.items():
        write_dota_label(root / "labelTxt" / f"{iid}.txt", lf.objects)
    write_task1_dir(root / "dets", d, classes)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")


def test_dirs_give_the_same_result_as_memory(tmp_path: Path) -> None:
    d, gt, classes = random_case(5)
    write_case(tmp_path, d, gt, classes)
    # Labels are written with 0.001 px precision: compare against the ground truth as written.
    timings = EvalTimings()
    from_files = evaluate_task1_dirs(tmp_path / "dets", tmp_path / "labelTxt", classes, timings=timings)
    from DOTA_devkit.eval import load_ground_truth
    in_memory = evaluate_task1(d, load_ground_truth(tmp_path / "labelTxt"), classes)
    assert from_files.to_dict() == in_memory.to_dict()
    assert timings.compute > 0 and timings.read_ground_truth > 0
    (tmp_path / "set.txt").write_text("# subset\nI000\nI001.png\nI001\n\n")
    assert read_imageset(tmp_path / "set.txt") == ["I000", "I001"]
    with pytest.raises(ValueError, match="outside the image set"):
        evaluate_task1_dirs(tmp_path / "dets", tmp_path / "labelTxt", classes, tmp_path / "set.txt")
    sub = evaluate_task1_dirs(tmp_path / "dets", tmp_path / "labelTxt", classes, tmp_path / "set.txt",
                              ignore_unknown_images=True)
    assert sub.num_images == 2 and sub.num_ignored_detections > 0


def test_regression_empty_task1_file_is_a_class_without_detections(tmp_path: Path) -> None:
    """DOTA's script crashes on an empty Task1 file (BB[sorted_ind, :] on a 1-d array)."""
    gt = {"I1": labels((box(0, 0, 10, 10), "plane", 0), (box(20, 20, 30, 30), "ship", 0))}
    write_case(tmp_path, {"plane": dets(("I1", 0.9, box(0, 0, 10, 10)))}, gt, CLASSES)
    assert (tmp_path / "dets" / "Task1_ship.txt").read_text() == ""
    res = evaluate_task1_dirs(tmp_path / "dets", tmp_path / "labelTxt", CLASSES)
    assert res.per_class["ship"].num_det == 0 and res.per_class["ship"].ap07 == 0.0
    assert res.per_class["plane"].ap07 == pytest.approx(1.0, abs=1e-15)


def test_pr_pictures(tmp_path: Path) -> None:
    d, gt, classes = random_case(6)
    res = evaluate_task1(d, gt, classes)
    paths = write_pr_curves(res, tmp_path / "pr")
    assert [p.name for p in paths] == [f"pr_{c}.png" for c in classes]
    img = cv2.imread(str(paths[0]))
    assert img.shape == (480, 640, 3)
    assert (img[:, :, 0] > 150).sum() > 0 and (img != 255).any(axis=2).mean() > 0.01  # something drawn


def test_cli(tmp_path: Path) -> None:
    d, gt, classes = random_case(8)
    write_case(tmp_path, d, gt, classes)
    cmd = [sys.executable, str(REPO / "tools" / "eval.py"), "--det-dir", str(tmp_path / "dets"),
           "--label-dir", str(tmp_path / "labelTxt"), "--classes", str(tmp_path / "classes.txt"),
           "--json", str(tmp_path / "r.json"), "--plot-dir", str(tmp_path / "pr")]
    run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "mAP (DOTA, all 5 classes)" in run.stdout and "mAP (classes with GT, n=3)" in run.stdout
    data = json.loads((tmp_path / "r.json").read_text())
    assert set(data["per_class"]) == set(classes) and data["det_dir"] == str(tmp_path / "dets")
    assert len(list((tmp_path / "pr").glob("pr_*.png"))) == 5
    bad = subprocess.run(cmd[:3] + [str(tmp_path / "missing")] + cmd[4:], capture_output=True, text=True,
                         check=False)
    assert bad.returncode == 2 and "error:" in bad.stderr


# ----------------------------------------------------------------------------------- issue 10 §1, §4
def test_regression_absurd_ground_truth_coordinates_do_not_change_ap(tmp_path: Path) -> None:
    """A 1e200 line made the area NaN and passed the area test: a perfect detection scored 27, not 100."""
    (tmp_path / "labelTxt").mkdir()
    (tmp_path / "labelTxt" / "I1.txt").write_text(
        "0 0 10 0 10 10 0 10 plane 0\n1e200 0 1e200 1 0 1 0 0 plane 0\n"
        "20 20 30 20 30 30 20 30 plane 0\n5e199 5e199 1e200 5e199 1e200 1e200 5e199 1e200 plane 0\n")
    write_task1_dir(tmp_path / "dets", {"plane": dets(("I1", 0.9, box(0, 0, 10, 10)),
                                                      ("I1", 0.8, box(20, 20, 30, 30)))}, ["plane"])
    res = evaluate_task1_dirs(tmp_path / "dets", tmp_path / "labelTxt", ["plane"])
    assert res.per_class["plane"].num_gt == 2
    assert res.per_class["plane"].ap07 == pytest.approx(1.0, abs=1e-15)


def test_iou_threshold_must_be_in_the_open_unit_interval(tmp_path: Path) -> None:
    gt = {"I1": labels((box(0, 0, 10, 10), "plane", 0))}
    for bad in (0.0, 1.0, -0.5, 1.5, math.nan):
        with pytest.raises(ValueError, match="IoU threshold must be in"):
            evaluate_task1({}, gt, CLASSES, iou_thresh=bad)
    write_case(tmp_path, {"plane": dets(("I1", 0.9, box(0, 0, 10, 10)))}, gt, CLASSES)
    with pytest.raises(ValueError, match="IoU threshold"):
        evaluate_task1_dirs(tmp_path / "dets", tmp_path / "labelTxt", CLASSES, iou_thresh=math.nan)


def test_folder_without_task1_files_is_an_error(tmp_path: Path) -> None:
    gt = {"I1": labels((box(0, 0, 10, 10), "plane", 0))}
    write_case(tmp_path, {}, gt, CLASSES)
    for p in (tmp_path / "dets").iterdir():
        p.unlink()
    with pytest.raises(FileNotFoundError, match="no Task1_<class>.txt files"):
        evaluate_task1_dirs(tmp_path / "dets", tmp_path / "labelTxt", CLASSES)
    (tmp_path / "dets" / "Task1_Plane.txt").write_text("I1 0.9 0 0 10 0 10 10 0 10\n")
    with pytest.raises(FileNotFoundError, match="did you mean 'plane' for 'Plane'"):
        evaluate_task1_dirs(tmp_path / "dets", tmp_path / "labelTxt", CLASSES)


def test_regression_ground_truth_classes_outside_the_list_warn_with_the_close_match(
        caplog: pytest.LogCaptureFixture) -> None:
    """'Plane' ground truth against a 'plane' class list gave mAP 0 without a word."""
    gt = {"I1": labels((box(0, 0, 10, 10), "Plane", 0), (box(20, 20, 30, 30), "Small_Vehicle", 0))}
    with caplog.at_level("WARNING"):
        res = evaluate_task1({"plane": dets(("I1", 0.9, box(0, 0, 10, 10)))}, gt,
                             ("plane", "small-vehicle", "ship"))
    assert res.map07 == 0.0
    assert "none of the 2 ground-truth object(s) has a class of the class list" in caplog.text
    assert "did you mean 'plane' for 'Plane', 'small-vehicle' for 'Small_Vehicle'?" in caplog.text
    caplog.clear()
    gt["I1"].objects.append(DotaObject(np.array(box(40, 40, 50, 50), dtype=np.float64), "ship", 0))
    with caplog.at_level("WARNING"):
        evaluate_task1({}, gt, ("plane", "small-vehicle", "ship"))
    assert "2 ground-truth object(s) of classes outside the class list ignored" in caplog.text


def test_cli_rejects_bad_thresholds_and_empty_folders(tmp_path: Path) -> None:
    gt = {"I1": labels((box(0, 0, 10, 10), "plane", 0))}
    write_case(tmp_path, {"plane": dets(("I1", 0.9, box(0, 0, 10, 10)))}, gt, CLASSES)
    (tmp_path / "empty").mkdir()
    base = [sys.executable, str(REPO / "tools" / "eval.py"), "--label-dir", str(tmp_path / "labelTxt"),
            "--classes", str(tmp_path / "classes.txt")]
    for extra in (["--det-dir", str(tmp_path / "dets"), "--iou-thresh", "nan"],
                  ["--det-dir", str(tmp_path / "dets"), "--iou-thresh", "1.5"],
                  ["--det-dir", str(tmp_path / "empty")]):
        run = subprocess.run(base + extra, capture_output=True, text=True, check=False)
        errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
        assert run.returncode == 2 and len(errors) == 1 and "Traceback" not in run.stderr
        assert run.stderr.splitlines()[-1] == errors[0]
