"""Synthetic DOTA-format data: labels match drawings, determinism, layout, cached default set."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from tool_loader import load_tool

from bbavectors.data import synthetic
from bbavectors.data.dataset import DotaDataset
from bbavectors.data.synthetic import (
    CLASS_COLORS,
    DEFAULT_PARAMS,
    MARKER_NAME,
    SyntheticParams,
    default_dataset_root,
    ensure_dataset,
    ensure_default_dataset,
    make_synthetic_dataset,
    render_scene,
)
from DOTA_devkit.classes import SYNTHETIC
from DOTA_devkit.geometry import poly_to_obb
from DOTA_devkit.labels import read_dota_label

REPO = Path(__file__).resolve().parents[1]

PLAIN = dataclasses.replace(DEFAULT_PARAMS, texture=0.0, border_fraction=0.0, difficult_fraction=0.0)


def raster(poly: np.ndarray, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    pts = np.round((np.asarray(poly, float).reshape(4, 2) - 0.5) * 16).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, cv2.LINE_8, 4)
    return mask.astype(bool)


def extents_along_box(mask: np.ndarray, poly: np.ndarray) -> tuple[float, float, float, float]:
    """Extent of the drawn pixels' centres along the label box's long and short axes, and the
    box's w, h (centres span up to about 1-1.4 px less than the shape they sample)."""
    _, _, w, h, a = poly_to_obb(poly[None])[0]
    ys, xs = np.nonzero(mask)
    pts = np.stack([xs + 0.5, ys + 0.5], axis=1)
    u = pts @ np.array([np.cos(a), np.sin(a)])
    v = pts @ np.array([-np.sin(a), np.cos(a)])
    return float(np.ptp(u)), float(np.ptp(v)), float(w), float(h)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_labels_are_the_tight_boxes_of_the_drawn_objects(seed: int) -> None:
    params = dataclasses.replace(PLAIN, num_objects=(8, 12), touch_fraction=0.3)
    scene = render_scene(np.random.default_rng(seed), params, with_instance_map=True)
    assert scene.instance_map is not None and len(scene.objects) >= 4
    size = params.image_size
    colors = {name: np.array(c, float) for name, c in CLASS_COLORS.items()}
    for k, obj in enumerate(scene.objects, 1):
        mask = scene.instance_map == k
        poly_mask = raster(obj.polygon, size)
        if obj.polygon.min() < 0.5 or obj.polygon.max() > size - 0.5:
            continue  # a touching neighbour placed across the border (see the next test)
        assert obj.difficult == 0
        # Every drawn pixel lies inside the label polygon...
        assert (mask & poly_mask).sum() / mask.sum() >= 0.97, obj.class_name
        # ... and the polygon is tight on all four sides.
        du, dv, w, h = extents_along_box(mask, obj.polygon)
        # OpenCV fills boundary pixels too: up to about 0.7 px past each side.
        assert -1.5 <= w - du <= 2.5 and -1.5 <= h - dv <= 2.5, (obj.class_name, du, dv, w, h)
        iou = (mask & poly_mask).sum() / (mask | poly_mask).sum()
        if obj.class_name in ("small-vehicle", "large-vehicle"):
            assert iou >= 0.85
        elif obj.class_name == "storage-tank":
            assert 0.68 <= iou <= 0.86  # a disc in its square: pi / 4
            assert obj.polygon[1] == obj.polygon[3]  # axis-aligned like DOTA's tank labels
        # The class is told by colour: the object's typical colour is nearest its class colour.
        core = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        typical = np.median(scene.image[core if core.sum() > 10 else mask], axis=0)
        nearest = min(colors, key=lambda c: float(np.abs(colors[c] - typical).sum()))
        assert nearest == obj.class_name


def test_objects_cut_by_the_border_are_clipped_like_dota_split() -> None:
    params = dataclasses.replace(PLAIN, border_fraction=1.0, touch_fraction=0.0, num_objects=(10, 12))
    seen_difficult_2 = 0
    for seed in range(4):
        scene = render_scene(np.random.default_rng(seed), params, with_instance_map=True)
        assert scene.instance_map is not None
        for k, obj in enumerate(scene.objects, 1):
            mask = scene.instance_map == k
            assert mask.any()  # nothing labelled that is not drawn
            assert (mask & raster(obj.polygon, params.image_size)).sum() / mask.sum() >= 0.95
            seen_difficult_2 += obj.difficult == 2
        drawn_ids = set(np.unique(scene.instance_map)) - {0}
        assert drawn_ids == set(range(1, len(scene.objects) + 1))  # nothing drawn that is not labelled
    assert seen_difficult_2 > 0


def test_faint_objects_are_difficult() -> None:
    params = dataclasses.replace(PLAIN, difficult_fraction=1.0)
    scene = render_scene(np.random.default_rng(0), params)
    flags = [o.difficult for o in scene.objects]
    assert flags and set(flags) <= {1, 2} and flags.count(1) >= len(flags) // 2  # 2: cut by the border


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    kwargs = dict(image_size=96, progress=False, num_objects=(2, 5), size_range=(10.0, 40.0))
    a = make_synthetic_dataset(tmp_path / "a", 5, seed=3, **kwargs)  # type: ignore[arg-type]
    b = make_synthetic_dataset(tmp_path / "b", 5, seed=3, **kwargs)  # type: ignore[arg-type]
    c = make_synthetic_dataset(tmp_path / "c", 5, seed=4, **kwargs)  # type: ignore[arg-type]
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != MARKER_NAME)
    assert len(files) == 5 * 2 + 4
    assert (a / MARKER_NAME).read_bytes() == (b / MARKER_NAME).read_bytes()  # the parameters, recorded
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    differs = [rel for rel in files if rel.parts[0] in ("images", "labelTxt")
               and (a / rel).read_bytes() != (c / rel).read_bytes()]
    assert len(differs) == 10


def test_layout_header_splits_and_classes(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "s", 20, seed=1, image_size=64, progress=False,
                                  size_range=(8.0, 24.0), num_objects=(1, 3))
    ids = sorted(p.stem for p in (root / "images").glob("*.png"))
    assert len(ids) == 20
    splits = {n: (root / f"{n}.txt").read_text().split() for n in ("trainval", "val", "test")}
    assert [len(splits[n]) for n in ("trainval", "val", "test")] == [14, 4, 2]
    assert sorted(sum(splits.values(), [])) == ids  # disjoint and complete
    assert (root / "classes.txt").read_text().split() == list(SYNTHETIC)
    text = (root / "labelTxt" / f"{ids[0]}.txt").read_text().splitlines()
    assert text[0] == "imagesource:synthetic" and text[1].startswith("gsd:")
    lf = read_dota_label(root / "labelTxt" / f"{ids[0]}.txt", classes=SYNTHETIC, strict=True)
    assert lf.imagesource == "synthetic" and lf.gsd == synthetic.GSD
    img = cv2.imread(str(root / "images" / f"{ids[0]}.png"))
    assert img is not None and img.shape == (64, 64, 3)


def test_bad_parameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="num_objects"):
        SyntheticParams(num_objects=(5, 2))
    with pytest.raises(ValueError, match="size_range"):
        SyntheticParams(size_range=(0.0, 10.0))
    with pytest.raises(ValueError, match="val_fraction"):
        SyntheticParams(val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ValueError, match="seed"):
        make_synthetic_dataset("/nonexistent", 3, seed=-1)
    with pytest.raises(ValueError, match="num_images"):
        make_synthetic_dataset("/nonexistent", 0, seed=1)


SMALL = dataclasses.replace(DEFAULT_PARAMS, image_size=48, num_objects=(1, 2), size_range=(8.0, 16.0))


def test_ensure_dataset_caches_and_regenerates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cache" / "syn"
    assert ensure_dataset(root, 6, 0, SMALL) == root
    marker = json.loads((root / MARKER_NAME).read_text())
    assert marker["generator_version"] == synthetic.GENERATOR_VERSION and marker["num_images"] == 6
    first = (root / "images" / "syn00000.png").read_bytes()

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("regenerated a valid cache")

    monkeypatch.setattr(synthetic, "make_synthetic_dataset", must_not_run)
    ensure_dataset(root, 6, 0, SMALL)  # cached
    monkeypatch.undo()
    ensure_dataset(root, 6, 1, SMALL)  # other seed: replaced
    assert (root / "images" / "syn00000.png").read_bytes() != first
    assert json.loads((root / MARKER_NAME).read_text())["seed"] == 1
    monkeypatch.setattr(synthetic, "GENERATOR_VERSION", synthetic.GENERATOR_VERSION + 1)
    ensure_dataset(root, 6, 1, SMALL)  # new generator: replaced
    assert json.loads((root / MARKER_NAME).read_text())["generator_version"] == synthetic.GENERATOR_VERSION
    assert sorted(p.name for p in root.parent.iterdir()) == ["syn"]  # no temporary folders left


def test_interrupted_generation_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(out_dir: Path, *args: object, **kwargs: object) -> None:
        (Path(out_dir) / "images").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "make_synthetic_dataset", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_dataset(tmp_path / "syn", 4, 0, SMALL)
    assert list(tmp_path.iterdir()) == []


def test_ensure_dataset_never_deletes_foreign_data(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    (root / "precious.png").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="refusing"):
        ensure_dataset(root, 4, 0, SMALL)
    assert (root / "precious.png").exists()


def test_default_root_is_in_the_repository() -> None:
    assert default_dataset_root() == REPO / "datasets" / "synthetic"


def test_default_dataset_is_the_documented_easy_set(tmp_path: Path) -> None:
    root = ensure_default_dataset(tmp_path / "default")
    train = DotaDataset(root, "trainval", input_size=320)
    val = DotaDataset(root, "val", input_size=320)
    assert (len(train), len(val), len(DotaDataset(root, "test", input_size=320))) == (212, 40, 28)
    assert not train.label_report.issues
    counts = train.class_counts()
    assert set(counts) == set(SYNTHETIC) and min(counts.values()) >= 200
    per_image = [r.polygons.shape[0] for r in train.records]
    assert 4 <= np.mean(per_image) <= 12
    long_sides = poly_to_obb(np.concatenate([r.polygons for r in train.records]))[:, 2]
    assert long_sides.max() <= 96 + 1e-6 and np.median(long_sides) >= 16
    assert ensure_default_dataset(tmp_path / "default") == root  # cached



def test_make_synthetic_tool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_synthetic_tool = load_tool("make_synthetic")
    out = tmp_path / "tool"
    assert make_synthetic_tool.main(["--out", str(out), "--images", "3", "--seed", "2", "--size", "64",
                                     "--objects", "1", "2", "--object-size", "8", "20"]) == 0
    assert len(list((out / "images").glob("*.png"))) == 3
    assert "wrote 3 images" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        make_synthetic_tool.main([])


def test_regression_make_synthetic_refuses_to_overwrite_other_data(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--out DIR overwrote an existing data set's classes.txt and split files without a word."""
    tool = load_tool("make_synthetic")
    args = ["--images", "2", "--seed", "2", "--size", "48", "--objects", "1", "2", "--object-size", "8", "16"]
    mine = tmp_path / "mine"
    (mine / "labelTxt").mkdir(parents=True)
    (mine / "classes.txt").write_text("tree\n")
    (mine / "val.txt").write_text("a\n")
    assert tool.main(["--out", str(mine), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a synthetic set" in err and str(mine) in err
    assert (mine / "classes.txt").read_text() == "tree\n" and (mine / "val.txt").read_text() == "a\n"
    assert sorted(p.name for p in mine.iterdir()) == ["classes.txt", "labelTxt", "val.txt"]

    syn = tmp_path / "syn"
    assert tool.main(["--out", str(syn), *args]) == 0
    marker = json.loads((syn / MARKER_NAME).read_text())
    assert marker["num_images"] == 2 and marker["seed"] == 2 and marker["params"]["image_size"] == 48
    first = {p.name: p.read_bytes() for p in (syn / "images").iterdir()}
    assert tool.main(["--out", str(syn), *args]) == 0  # the same set again: allowed, same bytes
    assert {p.name: p.read_bytes() for p in (syn / "images").iterdir()} == first
    capsys.readouterr()
    assert tool.main(["--out", str(syn), *args[:3], "3", *args[4:]]) == 2  # another seed
    assert "seed differ" in capsys.readouterr().err
    assert tool.main(["--out", str(syn), *args[:5], "64", *args[6:]]) == 2  # another image size
    assert "params.image_size" in capsys.readouterr().err
    assert json.loads((syn / MARKER_NAME).read_text()) == marker
    default = ensure_dataset(tmp_path / "cache", 3, 0, SMALL)  # the cached-set path keeps working
    assert ensure_dataset(default, 3, 0, SMALL) == default
    with pytest.raises(FileExistsError, match="other parameters"):
        make_synthetic_dataset(default, 3, 1, image_size=48, params=SMALL, progress=False)
