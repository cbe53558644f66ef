"""DOTA_devkit.task1: Task1 files read/write round trips, bad lines, the server zip."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from DOTA_devkit.classes import DOTA_V1_0
from DOTA_devkit.task1 import (
    ClassDetections,
    Task1FormatError,
    Task1ReadReport,
    parse_task1_text,
    read_task1_dir,
    read_task1_file,
    task1_file_name,
    write_task1_dir,
    write_task1_file,
    zip_task1_dir,
)


def random_dets(rng: np.random.Generator, n: int, prefix: str = "P") -> ClassDetections:
    ids = [f"{prefix}{i:04d}" for i in rng.integers(0, 20, n)]
    return ClassDetections(ids, rng.random(n), rng.uniform(-5, 4000, (n, 8)))


def assert_same(a: ClassDetections, b: ClassDetections) -> None:
    assert a.image_ids == b.image_ids
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.polygons, b.polygons)


def test_round_trip_is_exact_and_keeps_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    dets = {"plane": random_dets(rng, 500), "ship": random_dets(rng, 3), "harbor": ClassDetections.empty()}
    dets["plane"].scores[:10] = 0.5  # ties keep their file order
    write_task1_dir(tmp_path, dets, DOTA_V1_0)
    back = read_task1_dir(tmp_path, DOTA_V1_0)
    assert list(back) == list(DOTA_V1_0)
    for name in DOTA_V1_0:
        assert_same(back[name], dets.get(name, ClassDetections.empty()))
    # One file per class, empty ones included (the DOTA server expects all of them).
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(task1_file_name(c) for c in DOTA_V1_0)
    assert (tmp_path / "Task1_helicopter.txt").read_text() == ""


def test_line_layout_is_dota_task1(tmp_path: Path) -> None:
    dets = ClassDetections(["P0001"], [0.75], [[1, 2, 3.5, 4, 5, 6, 7, 8]])
    write_task1_file(tmp_path / "Task1_plane.txt", dets)
    assert (tmp_path / "Task1_plane.txt").read_text() == "P0001 0.75 1.0 2.0 3.5 4.0 5.0 6.0 7.0 8.0\n"


def test_fast_and_line_by_line_paths_agree() -> None:
    plain = "P1 0.9 1 2 3 4 5 6 7 8\nP2 0.8 10 20 30 40 50 60 70 80\n"
    messy = "P1\t0.9 1 2 3 4 5 6 7 8  \r\n\n  P2 0.8 10 20 30 40 50 60 70 80"
    a, b = parse_task1_text(plain), parse_task1_text(messy)
    assert_same(a, b)
    assert a.image_ids == ["P1", "P2"]
    np.testing.assert_array_equal(a.polygons[1], [10, 20, 30, 40, 50, 60, 70, 80])


def test_bad_lines_are_reported_with_line_number_and_skipped() -> None:
    # 11 + 9 fields sum to 20: the fast path must not accept them.
    text = ("P1 0.9 1 2 3 4 5 6 7 8\n"
            "P2 0.9 1 2 3 4 5 6 7 8 9\n"
            "P3 0.9 1 2 3 4 5 6 7\n"
            "P4 abc 1 2 3 4 5 6 7 8\n"
            "P5 nan 1 2 3 4 5 6 7 8\n"
            "P6 0.1 1 2 3 4 5 6 7 8\n")
    report = Task1ReadReport()
    dets = parse_task1_text(text, "Task1_x.txt", report=report)
    assert dets.image_ids == ["P1", "P6"]
    assert [i.line for i in report.issues] == [2, 3, 4, 5]
    assert all(i.path == "Task1_x.txt" for i in report.issues)
    assert "10 fields" in report.issues[0].message
    assert report.detections == 2
    with pytest.raises(Task1FormatError, match=r"Task1_x.txt:2:"):
        parse_task1_text(text, "Task1_x.txt", strict=True)


def test_read_dir_with_class_list(tmp_path: Path) -> None:
    (tmp_path / "Task1_plane.txt").write_text("P1 0.5 0 0 1 0 1 1 0 1\n")
    (tmp_path / "Task1_unknown-thing.txt").write_text("P1 0.5 0 0 1 0 1 1 0 1\n")
    got = read_task1_dir(tmp_path, ["plane", "ship"])
    assert list(got) == ["plane", "ship"]
    assert len(got["plane"]) == 1 and len(got["ship"]) == 0
    assert set(read_task1_dir(tmp_path)) == {"plane", "unknown-thing"}
    with pytest.raises(FileNotFoundError):
        read_task1_dir(tmp_path / "missing")


def test_write_rejects_what_would_be_lost(tmp_path: Path) -> None:
    d = ClassDetections(["P 1"], [0.5], np.zeros((1, 8)))
    with pytest.raises(ValueError, match="whitespace"):
        write_task1_file(tmp_path / "Task1_plane.txt", d)
    with pytest.raises(ValueError, match="not in the class list"):
        write_task1_dir(tmp_path, {"blimp": ClassDetections.empty()}, ["plane"])
    with pytest.raises(ValueError, match="NaN"):
        write_task1_file(tmp_path / "Task1_plane.txt", ClassDetections(["P1"], [np.nan], np.zeros((1, 8))))
    with pytest.raises(ValueError, match="equally many"):
        ClassDetections(["P1", "P2"], [0.5], np.zeros((1, 8)))


def test_crlf_file_reads(tmp_path: Path) -> None:
    p = tmp_path / "Task1_ship.txt"
    p.write_bytes(b"P1 0.5 0 0 1 0 1 1 0 1\r\nP2 0.25 0 0 2 0 2 2 0 2\r\n")
    d = read_task1_file(p)
    assert d.image_ids == ["P1", "P2"]
    np.testing.assert_array_equal(d.scores, [0.5, 0.25])


def test_zip_matches_the_official_example_layout(tmp_path: Path, shared_data: Path) -> None:
    example = zipfile.ZipFile(shared_data / "dota_submission_example" / "example_task1.zip")
    rng = np.random.default_rng(1)
    write_task1_dir(tmp_path / "dets", {"plane": random_dets(rng, 20)}, DOTA_V1_0)
    out = zip_task1_dir(tmp_path / "dets", tmp_path / "sub" / "task1.zip", DOTA_V1_0)
    ours = zipfile.ZipFile(out)
    assert sorted(ours.namelist()) == sorted(example.namelist())  # files at the zip root
    assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in ours.infolist())
    assert ours.read("Task1_plane.txt") == (tmp_path / "dets" / "Task1_plane.txt").read_bytes()
    # The example itself parses with our reader.
    (tmp_path / "ex").mkdir()
    example.extractall(tmp_path / "ex")
    dets = read_task1_dir(tmp_path / "ex", DOTA_V1_0, strict=True)
    first = dets["baseball-diamond"]
    assert first.image_ids[0] == "P2178" and first.scores[0] == 0.842247962952
    np.testing.assert_array_equal(first.polygons[0], [193, 442, 267, 444, 266, 522, 192, 520])
    assert sum(len(d) for d in dets.values()) > 100


def test_zip_without_class_list_takes_the_folder(tmp_path: Path) -> None:
    (tmp_path / "Task1_ship.txt").write_text("")
    z = zip_task1_dir(tmp_path, tmp_path / "a.zip")
    assert zipfile.ZipFile(z).namelist() == ["Task1_ship.txt"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        zip_task1_dir(tmp_path / "empty", tmp_path / "b.zip")


def test_regression_scores_outside_the_unit_interval_are_reported_with_the_line(tmp_path: Path) -> None:
    path = tmp_path / "Task1_plane.txt"
    path.write_text("P1 0.5 0 0 10 0 10 10 0 10\nP1 1.7 0 0 10 0 10 10 0 10\n\nP2 -3 0 0 10 0 10 10 0 10\n")
    report = Task1ReadReport()
    dets = read_task1_file(path, report=report)
    assert len(dets) == 3 and report.issues == []  # kept: only the order of scores matters
    assert [(w.line, w.message.split(" (")[0]) for w in report.warnings] == [
        (2, "score 1.7 outside [0, 1]"), (4, "score -3 outside [0, 1]")]
    assert str(report.warnings[0]).startswith(f"{path}:2: score 1.7")
    assert report.summary() == "1 Task1 file(s), 3 detection(s) (2 with a score outside [0, 1], kept)"


def test_regression_latin1_task1_line_is_reported_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "Task1_plane.txt"
    path.write_bytes(b"P1 0.5 0 0 10 0 10 10 0 10\n"
                     b"P\xe9 0.5 0 0 10 0 10 10 0 10\n"
                     b"P2 0.4 0 0 10 0 10 10 0 10\n")
    report = Task1ReadReport()
    dets = read_task1_file(path, report=report)
    assert dets.image_ids == ["P1", "P2"]
    assert [str(i) for i in report.issues] == [
        f"{path}:2: not UTF-8 (byte 0xe9 at column 2); save the file as UTF-8"]
    with pytest.raises(Task1FormatError, match="Task1_plane.txt:2: not UTF-8"):
        read_task1_file(path, strict=True)
