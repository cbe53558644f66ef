"""Issue 10 §5: a generated corpus of bad inputs run through the data tools (split_dota, merge_dota,
eval, make_splits, make_synthetic): exit codes, one-line errors (never a traceback), and every
object or detection that goes in comes out or is counted. What each tool does with each kind of bad
input is the table in docs/data.md; other areas' tools have their own tests/test_bad_inputs_<area>.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from jpeg_exif import asymmetric_image, jpeg_bytes

from bbavectors.data.dataset import DotaDataset
from bbavectors.data.image_io import read_image
from DOTA_devkit.image_io import read_image_bgr
from DOTA_devkit.split import SplitOptions, split_scene

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("plane", "ship")

GOOD = ["10 10 60 10 60 40 10 40 plane 0",  # whole
        "170 100 230 100 230 140 170 140 ship 1"]  # cut by the scene border (x > 200)
OUTSIDE = ["400 400 450 400 450 450 400 450 ship 0"]  # wholly outside the 200x200 scene
REPAIRED = ["100 100 140 100 100 130 140 130 plane 0"]  # bow-tie rectangle: TL TR BL BR
BAD = {  # kind the label reader reports -> line
    "malformed": "10 10 60 10 60 40 plane 0",
    "non-finite": "10 10 nan 10 60 40 10 40 plane 0",
    "out-of-range": "1e200 0 1e200 1 0 1 0 0 plane 0",
    "unknown-class": "10 10 60 10 60 40 10 40 airplane 0",
    "self-intersecting": "0 0 40 0 10 30 50 20 ship 0",
    "degenerate": "10 10 20 10 30 10 40 10 ship 0",
    "bad-difficult": "10 10 60 10 60 40 10 40 ship 7",
}


def run_tool(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "tools" / f"{tool}.py"), *args],
                          capture_output=True, text=True, check=False)


def assert_one_line_error(run: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, no traceback, exactly one ``error:`` line (the last one) holding every needle."""
    assert "Traceback" not in run.stderr, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert run.returncode == 2 and len(errors) == 1 and run.stderr.splitlines()[-1] == errors[0], run.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def write_label_lines(path: Path, lines: list[str], latin1_line: bool = False) -> None:
    data = "".join(f"{line}\n" for line in lines).encode()
    if latin1_line:
        data += "10 10 60 10 60 40 10 40 avi\u00f3n 0\n".encode("latin-1")
    path.write_bytes(data)


def make_corpus(root: Path) -> dict[str, int]:
    """``root/images`` + ``root/labelTxt``: one good scene full of bad label lines, an EXIF-rotated
    JPEG, and three unreadable images (truncated, random bytes, empty). Returns the expected counts."""
    (root / "images").mkdir(parents=True)
    (root / "labelTxt").mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(root / "images" / "good.png"), rng.integers(0, 255, (200, 200, 3), dtype=np.uint8))
    write_label_lines(root / "labelTxt" / "good.txt",
                      ["imagesource:GoogleEarth", "gsd:0.5", *GOOD, *OUTSIDE, *REPAIRED, *BAD.values()],
                      latin1_line=True)
    (root / "images" / "exif.jpg").write_bytes(jpeg_bytes(asymmetric_image(24, 40), orientation=6))
    write_label_lines(root / "labelTxt" / "exif.txt", ["2 2 12 2 12 8 2 8 plane 0"])
    good_png = (root / "images" / "good.png").read_bytes()
    (root / "images" / "truncated.png").write_bytes(good_png[: len(good_png) // 3])
    (root / "images" / "random.png").write_bytes(rng.integers(0, 255, 500, dtype=np.uint8).tobytes())
    (root / "images" / "empty.png").write_bytes(b"")
    for stem in ("truncated", "random", "empty"):
        write_label_lines(root / "labelTxt" / f"{stem}.txt", GOOD[:1])
    object_lines = len(GOOD) + len(OUTSIDE) + len(REPAIRED) + len(BAD) + 1  # + the Latin-1 line
    return {"object_lines": object_lines + 1,  # + exif.txt's object
            "kept": len(GOOD) + len(OUTSIDE) + len(REPAIRED) + 1, "skipped": len(BAD) + 1, "repaired": 1,
            "outside": 1, "unreadable": 3}


def summary_numbers(stdout: str) -> dict[str, int]:
    labels = re.search(r"labels: (\d+) label file\(s\), (\d+) object\(s\) kept(?: \((\d+) repaired[^)]*\))?"
                       r"(?:, skipped: (.*))?", stdout)
    ledger = re.search(r"objects in: (\d+) \(kept labels x rates\) = (\d+) in patches \+ (\d+) outside the "
                       r"image \+ (\d+) under 1 px\^2", stdout)
    problems = re.search(r"problems: (\d+) unreadable image\(s\)", stdout)
    assert labels and ledger and problems, stdout
    skipped = sum(int(n) for n, _ in re.findall(r"(\d+) ([\w-]+)", labels.group(4) or ""))
    return {"files": int(labels.group(1)), "kept": int(labels.group(2)),
            "repaired": int(labels.group(3) or 0),
            "skipped": skipped, "objects_in": int(ledger.group(1)), "in_patches": int(ledger.group(2)),
            "outside": int(ledger.group(3)), "tiny": int(ledger.group(4)),
            "unreadable": int(problems.group(1))}


# ----------------------------------------------------------------------------------- split_dota
def test_split_dota_counts_every_object_of_a_bad_corpus(tmp_path: Path) -> None:
    expected = make_corpus(tmp_path / "src")
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    run = run_tool("split_dota", "--src", str(tmp_path / "src"), "--dst", str(tmp_path / "dst"),
                   "--subsize", "128", "--gap", "28", "--classes", str(tmp_path / "classes.txt"), "--quiet")
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    n = summary_numbers(run.stdout)
    # Lines in = kept + skipped (each named with file:line); kept objects = in patches + counted drops.
    assert n["kept"] + n["skipped"] == expected["object_lines"]
    assert (n["kept"], n["skipped"], n["repaired"]) == (expected["kept"], expected["skipped"], 1)
    assert n["objects_in"] == n["kept"] == n["in_patches"] + n["outside"] + n["tiny"]
    assert (n["outside"], n["tiny"], n["unreadable"]) == (1, 0, 3)
    for kind in [*BAD, "not-utf8"]:
        assert re.search(rf"good\.txt:\d+: {kind}: ", run.stdout), kind
    for name in ("truncated.png", "random.png", "empty.png"):
        assert name in run.stdout
    written = sum(len(p.read_text().splitlines()) - 2 for p in (tmp_path / "dst/labelTxt").glob("good__*"))
    assert written >= 3  # the whole plane, the repaired bow-tie and the ship's piece (overlaps repeat them)
    assert not any("avi" in p.read_text() for p in (tmp_path / "dst/labelTxt").iterdir())  # no U+FFFD class
    # The EXIF-tagged JPEG is cut as stored (24 x 40), not turned to 40 x 24.
    patch = cv2.imread(str(tmp_path / "dst/images/exif__1__0___0.png"), cv2.IMREAD_UNCHANGED)
    stored = cv2.imdecode(np.fromfile(tmp_path / "src/images/exif.jpg", np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(patch[:24, :40], stored)
    assert not patch[24:].any() and not patch[:, 40:].any()


def test_split_dota_refuses_what_would_lose_inputs(tmp_path: Path) -> None:
    make_corpus(tmp_path / "src")
    src = str(tmp_path / "src")
    same = run_tool("split_dota", "--src", src, "--dst", src, "--quiet")
    assert_one_line_error(same, "--dst", "source folder")
    assert_one_line_error(run_tool("split_dota", "--src", str(tmp_path / "src"), "--dst",
                                   str(tmp_path / "src/images/out"), "--quiet"), "inside the source folder")
    (tmp_path / "src/images/good.jpg").write_bytes(b"x")
    assert_one_line_error(run_tool("split_dota", "--src", str(tmp_path / "src"), "--dst", str(tmp_path / "d"),
                                   "--quiet"), "two images with the id 'good'", "good.jpg", "good.png")
    missing = run_tool("split_dota", "--src", str(tmp_path / "none"), "--dst", str(tmp_path / "d"))
    assert_one_line_error(missing, "image folder not found")
    assert not (tmp_path / "d").exists()


# ----------------------------------------------------------------------------------- EXIF
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_regression_exif_orientation_is_ignored_by_every_reader(tmp_path: Path, orientation: int) -> None:
    """The split tool decoded with IMREAD_COLOR, which applies the EXIF orientation: a tagged phone or
    drone JPEG was turned while its labels were not. Every reader must return the stored pixels."""
    stored_bgr = cv2.imdecode(np.frombuffer(jpeg_bytes(asymmetric_image(24, 40)), np.uint8), cv2.IMREAD_COLOR)
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    (root / "labelTxt").mkdir()
    path = root / "images" / "tagged.jpg"
    path.write_bytes(jpeg_bytes(asymmetric_image(24, 40), orientation))
    turned = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)  # what OpenCV does by default
    assert not np.array_equal(turned, stored_bgr)  # the tag is real: the test can fail
    np.testing.assert_array_equal(read_image_bgr(path), stored_bgr)
    np.testing.assert_array_equal(read_image(path), stored_bgr[:, :, ::-1])
    write_label_lines(root / "labelTxt" / "tagged.txt", ["2 2 12 2 12 8 2 8 plane 0"])
    sample = DotaDataset(root, None, CLASSES, input_size=40)[0]
    assert sample["orig_size"] == (24, 40)
    np.testing.assert_array_equal(sample["image"].permute(1, 2, 0).numpy()[:24], stored_bgr[:, :, ::-1])
    for sub in ("images", "labelTxt"):
        (tmp_path / "out" / sub).mkdir(parents=True)
    result = split_scene(path, root / "labelTxt" / "tagged.txt", tmp_path / "out",
                         SplitOptions(subsize=64, gap=8))
    assert result.error is None and result.patches == 1
    patch = cv2.imread(str(tmp_path / "out/images/tagged__1__0___0.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(patch[:24, :40], stored_bgr)


# ----------------------------------------------------------------------------------- Task1 files
def write_task1(folder: Path, name: str, lines: list[str], latin1_line: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    data = "".join(f"{line}\n" for line in lines).encode()
    if latin1_line:
        data += "sc\u00e8ne 0.5 0 0 10 0 10 10 0 10\n".encode("latin-1")
    (folder / f"Task1_{name}.txt").write_bytes(data)


TASK1_GOOD = ["P1__1__0___0 0.9 10 10 60 10 60 40 10 40", "P1__1__100___0 0.8 0 10 50 10 50 40 0 40"]
TASK1_SCORES = ["P1__1__0___0 1.7 100 100 140 100 140 130 100 130", "P1__1__0___0 -2 0 0 5 0 5 5 0 5"]
TASK1_BAD = ["P1__1__0___0 0.9 10 10 60 10", "P1__1__0___0 0.9 10 10 nan 10 60 40 10 40",
             "P1__1__0___0 high 10 10 60 10 60 40 10 40"]


def test_merge_dota_reports_bad_task1_lines_and_scores(tmp_path: Path) -> None:
    write_task1(tmp_path / "dets", "plane", TASK1_GOOD + TASK1_SCORES + TASK1_BAD, latin1_line=True)
    run = run_tool("merge_dota", "--det-dir", str(tmp_path / "dets"), "--out", str(tmp_path / "merged"))
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    # Lines in = detections read + bad lines skipped; scores outside [0, 1] kept and reported.
    assert ("read 1 Task1 file(s), 4 detection(s) (2 with a score outside [0, 1], kept), "
            "4 bad line(s) skipped") in run.stdout
    for line in (3, 4):
        assert f"Task1_plane.txt:{line}: score " in run.stderr
    for line in (5, 6, 7, 8):
        assert f"Task1_plane.txt:{line}: " in run.stderr
    assert "Task1_plane.txt:8: not UTF-8" in run.stderr
    (tmp_path / "nothing").mkdir()
    assert_one_line_error(run_tool("merge_dota", "--det-dir", str(tmp_path / "nothing"), "--out",
                                   str(tmp_path / "m2")), "no Task1_<class>.txt files")
    assert_one_line_error(run_tool("merge_dota", "--det-dir", str(tmp_path / "dets"), "--out",
                                   str(tmp_path / "m3"), "--strict"), "Task1_plane.txt:")


def test_eval_on_a_bad_corpus(tmp_path: Path) -> None:
    make_corpus(tmp_path / "gt")
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    write_task1(tmp_path / "dets", "plane", ["good 0.9 10 10 60 10 60 40 10 40", *[
        line.replace("P1__1__0___0", "good") for line in TASK1_SCORES + TASK1_BAD]], latin1_line=False)
    base = ["--label-dir", str(tmp_path / "gt/labelTxt"), "--classes", str(tmp_path / "classes.txt"),
            "--ignore-unknown-images"]
    run = run_tool("eval", "--det-dir", str(tmp_path / "dets"), *base)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    for kind in ("out-of-range", "non-finite", "self-intersecting", "not-utf8"):
        assert re.search(rf"good\.txt:\d+: {kind}: ", run.stderr), kind
    assert "Task1_plane.txt:2: score 1.7 outside [0, 1]" in run.stderr
    assert "ground-truth object(s) of classes outside the class list ignored: airplane" in run.stderr
    for bad in ("nan", "0", "1", "-1"):
        bad_run = run_tool("eval", "--det-dir", str(tmp_path / "dets"), *base, "--iou-thresh", bad)
        assert_one_line_error(bad_run, "IoU threshold must be in (0, 1)")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_tool("eval", "--det-dir", str(tmp_path / "empty"), *base),
                          "no Task1_<class>.txt")
    (tmp_path / "upper").mkdir()
    (tmp_path / "upper/classes.txt").write_text("Plane\nShip\n")
    upper = run_tool("eval", "--det-dir", str(tmp_path / "dets"), "--label-dir",
                     str(tmp_path / "gt/labelTxt"), "--classes", str(tmp_path / "upper/classes.txt"))
    assert_one_line_error(upper, "did you mean 'Plane' for 'plane'")


# ----------------------------------------------------------------------------------- make_splits
def test_make_splits_on_a_bad_corpus(tmp_path: Path) -> None:
    expected = make_corpus(tmp_path / "data")
    (tmp_path / "plane.txt").write_text("plane\n")
    run = run_tool("make_splits", "--data", str(tmp_path / "data"), "--val", "0.2", "--classes",
                   str(tmp_path / "plane.txt"))
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    m = re.search(r"labels: 5 label file\(s\), (\d+) object\(s\) kept \(1 repaired[^)]*\), skipped: (.*)",
                  run.stdout)
    assert m, run.stdout
    skipped = sum(int(k) for k, _ in re.findall(r"(\d+) ([\w-]+)", m.group(2)))
    # Every label file is read here (also those of the 3 unreadable images: one object each); ships are
    # unknown-class lines with --classes plane.
    assert int(m.group(1)) + skipped == expected["object_lines"] + 3
    assert_one_line_error(run_tool("make_splits", "--data", str(tmp_path / "data"), "--val", "nan"), "val")
    (tmp_path / "data/images/good.jpg").write_bytes(b"x")
    assert_one_line_error(run_tool("make_splits", "--data", str(tmp_path / "data")),
                          "two images with the id 'good'", "good.jpg", "good.png")


# ----------------------------------------------------------------------------------- make_synthetic
def test_make_synthetic_never_overwrites_a_corpus(tmp_path: Path) -> None:
    make_corpus(tmp_path / "data")
    before = {p: p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file()}
    assert_one_line_error(run_tool("make_synthetic", "--out", str(tmp_path / "data"), "--images", "2"),
                          str(tmp_path / "data"), "not a synthetic set")
    assert {p: p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file()} == before
    assert_one_line_error(run_tool("make_synthetic", "--out", str(tmp_path / "new"), "--images", "0"),
                          "num_images")
