"""Pictures: GT from real labels, Task1 detections, a checkpoint's predictions, the augmentation grid."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from tool_loader import load_tool

from bbavectors.checkpoint import save_checkpoint
from bbavectors.config import AugmentConfig, Config, DecodeConfig, save_config
from bbavectors.data.image_io import read_image, write_image
from bbavectors.drawing import draw_detections
from bbavectors.inference.predictor import Predictor
from bbavectors.models.builder import build_model
from bbavectors.visualize import augmentation_grid, class_colors, draw_polygons, visualize_checkpoint
from DOTA_devkit.classes import DOTA_V1_0, SYNTHETIC
from DOTA_devkit.labels import read_dota_label

REPO = Path(__file__).resolve().parents[1]
PATCH = "P1478__1__853___962"




def run_tool(name: str, argv: list[str]) -> str:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert load_tool(name).main(argv) == 0
    return buffer.getvalue()


def edge_points(polygon: np.ndarray, per_edge: int = 8) -> np.ndarray:
    """Points along the 4 edges (away from the corners, where labels and neighbours meet)."""
    p = np.asarray(polygon, np.float64).reshape(4, 2)
    t = np.linspace(0.25, 0.75, per_edge)[:, None]
    return np.concatenate([p[i] + t * (p[(i + 1) % 4] - p[i]) for i in range(4)])


def colour_fraction(picture: np.ndarray, polygon: np.ndarray, colour: tuple[int, int, int]) -> float:
    """Fraction of edge points (inside the picture) with the exact colour in their 3x3 neighbourhood."""
    h, w = picture.shape[:2]
    hits = 0
    pts = np.rint(edge_points(polygon)).astype(int)
    pts = pts[(pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)]
    assert len(pts) >= 8, "too few edge points inside the picture to judge"
    for x, y in pts:
        patch = picture[max(0, y - 1):min(h, y + 2), max(0, x - 1):min(w, x + 2)].reshape(-1, 3)
        hits += bool((patch == np.asarray(colour, np.uint8)).all(1).any())
    return hits / len(pts)


# ----------------------------------------------------------------------------------- drawing
def test_draw_polygons_uses_exact_class_colours() -> None:
    image = np.full((120, 160, 3), 100, np.uint8)
    polys = np.array([[20, 20, 70, 20, 70, 60, 20, 60], [110, 30, 150, 70, 110, 110, 70, 70.0]])
    colors = class_colors(3)
    assert len(set(colors)) == 3 and class_colors(40)[:3] == colors and len(set(class_colors(40))) == 40
    out = draw_polygons(image, polys, [0, 2], scores=[0.9, 0.55], class_names=["a", "b", "c"],
                        show_labels=False, legend=False)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (image == 100).all()  # the input is not modified
    assert colour_fraction(out, polys[0], colors[0]) == 1.0
    assert colour_fraction(out, polys[1], colors[2]) == 1.0
    assert colour_fraction(out, polys[0], colors[2]) == 0.0  # and not the other class's colour
    labelled = draw_polygons(image, polys, [0, 2], scores=[0.9, 0.55], class_names=["a", "b", "c"])
    assert colour_fraction(labelled, polys[1], colors[2]) >= 0.8
    assert (labelled[:40, -60:] != out[:40, -60:]).any()  # the legend is at the top right


def test_draw_polygons_bad_inputs() -> None:
    image = np.zeros((10, 10, 3), np.uint8)
    square = [[1, 1, 5, 1, 5, 5, 1, 5]]
    with pytest.raises(ValueError, match="classes"):
        draw_polygons(image, square, [0, 1])
    with pytest.raises(ValueError, match="scores"):
        draw_polygons(image, square, [0], scores=[0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        draw_polygons(image, [[np.nan] * 8], [0])
    with pytest.raises(TypeError, match="uint8"):
        draw_polygons(image.astype(np.float32), square, [0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="colours"):
        draw_polygons(image, square, [3], colors=[(1, 2, 3)])


# ---------------------------------------------------------------------------- real ground truth
def test_draw_ground_truth_of_a_real_patch(shared_data: Path, tmp_path: Path) -> None:
    demo = shared_data / "dota_demo"
    images = tmp_path / "images"
    images.mkdir()
    (images / f"{PATCH}.png").symlink_to(demo / "images" / f"{PATCH}.png")
    out = tmp_path / "gt"
    text = run_tool("visualize", ["--images", str(images), "--labels", str(demo / "labelTxt"),
                                  "--out", str(out), "--classes", "dota1.0"])
    assert "wrote 1 picture" in text
    picture = read_image(out / f"{PATCH}.png")
    original = read_image(demo / "images" / f"{PATCH}.png")
    assert picture.shape == original.shape
    labels = read_dota_label(demo / "labelTxt" / f"{PATCH}.txt", classes=DOTA_V1_0)
    colors = class_colors(len(DOTA_V1_0))
    fractions = [colour_fraction(picture, o.polygon, colors[DOTA_V1_0.index(o.class_name)])
                 for o in labels.objects if o.difficult == 0 and np.ptp(o.polygon[0::2]) > 12]
    assert len(fractions) >= 5
    assert np.median(fractions) >= 0.9  # neighbours and labels may cover a few edge pixels


# --------------------------------------------------------------------------------- Task1 results
def test_draw_task1_detections(tmp_path: Path) -> None:
    from DOTA_devkit.task1 import ClassDetections, write_task1_dir

    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "img1.png", np.full((90, 120, 3), 60, np.uint8))
    write_image(images / "img2.png", np.full((50, 50, 3), 60, np.uint8))
    plane = np.array([[10, 10, 50, 10, 50, 40, 10, 40.0], [60, 20, 100, 20, 100, 80, 60, 80]])
    ship = np.array([[30, 50, 70, 45, 75, 80, 35, 85.0]])
    dets = {
        "plane": ClassDetections(["img1", "img1"], np.array([0.9, 0.1]), plane),
        "ship": ClassDetections(["img1"], np.array([0.6]), ship),
    }
    write_task1_dir(tmp_path / "task1", dets, ["plane", "ship"])
    out = tmp_path / "det"
    text = run_tool("visualize", ["--images", str(images), "--det-dir", str(tmp_path / "task1"),
                                  "--out", str(out), "--score-thresh", "0.3", "--classes", "plane", "ship"])
    assert "wrote 1 picture" in text and not (out / "img2.png").exists()  # img2 has no detections
    picture = read_image(out / "img1.png")
    assert picture.shape == (90, 120, 3)
    colors = class_colors(2)
    assert colour_fraction(picture, plane[0], colors[0]) >= 0.9
    assert colour_fraction(picture, ship[0], colors[1]) >= 0.9
    assert colour_fraction(picture, plane[1], colors[0]) < 0.3  # below the score threshold


def test_ground_truth_beside_task1_predictions_with_split_and_limit(tmp_path: Path) -> None:
    from DOTA_devkit.task1 import ClassDetections, write_task1_dir

    images, labels = tmp_path / "images", tmp_path / "labelTxt"
    images.mkdir()
    labels.mkdir()
    truth = np.array([10, 10, 50, 10, 50, 40, 10, 40.0])
    predicted = np.array([60, 20, 100, 20, 100, 80, 60, 80.0])
    for name in ("a", "b", "c"):
        write_image(images / f"{name}.png", np.full((90, 120, 3), 60, np.uint8))
        (labels / f"{name}.txt").write_text(" ".join(f"{v:g}" for v in truth) + " ship 0\n")
    dets = ClassDetections(["c", "b"], np.array([0.9, 0.8]), np.stack([predicted, predicted]))
    write_task1_dir(tmp_path / "task1", {"ship": dets}, ["ship"])
    split = tmp_path / "val.txt"
    split.write_text("c\nb\na\n")
    out = tmp_path / "compare"
    text = run_tool("visualize", ["--images", str(images), "--labels", str(labels), "--det-dir",
                                  str(tmp_path / "task1"), "--split", str(split), "--limit", "2",
                                  "--out", str(out), "--classes", "ship"])
    assert "wrote 2 picture" in text
    assert sorted(p.name for p in out.iterdir()) == ["b.png", "c.png"]  # the split's first two
    picture = read_image(out / "c.png")
    assert picture.shape[1] == 2 * 120 + 8 and picture.shape[0] > 90  # two halves, a caption band
    band = picture.shape[0] - 90
    left, right = picture[band:, :120], picture[band:, 128:]
    colour = class_colors(1)[0]
    assert colour_fraction(left, truth, colour) >= 0.9 and colour_fraction(left, predicted, colour) < 0.3
    assert colour_fraction(right, predicted, colour) >= 0.9 and colour_fraction(right, truth, colour) < 0.3


# ------------------------------------------------------------------------------ checkpoint output
def test_draw_checkpoint_predictions(tmp_path: Path) -> None:
    cfg = Config()
    cfg.model.backbone = "resnet18"
    cfg.model.head_width = 16
    cfg.data.classes = "synthetic"
    cfg.data.input_size = 128
    cfg.decode = DecodeConfig(top_k=20, score_thresh=0.3, nms_thresh=0.1)
    torch.manual_seed(0)
    model = build_model(cfg, len(SYNTHETIC)).eval()
    with torch.no_grad():
        model.heads.hm[-1].weight.mul_(30.0)  # random weights, but clear peaks
        wh = model.heads.wh[-1]  # ... and every peak a tilted ~30 px square (random boxes are tiny)
        wh.weight.zero_()
        wh.bias.copy_(torch.tensor([1.0, -4.0, 4.0, 1.0, -1.0, 4.0, -4.0, -1.0, 10.0, 10.0]))
        model.heads.cls_theta[-1].bias.fill_(8.0)
    save_checkpoint(tmp_path / "tiny.pt", model, cfg, list(SYNTHETIC))
    images = tmp_path / "images"
    images.mkdir()
    image = np.random.default_rng(0).integers(0, 256, (150, 210, 3), dtype=np.uint8)
    write_image(images / "scene.png", image)
    out = tmp_path / "pred"
    written = visualize_checkpoint(images, tmp_path / "tiny.pt", out, score_thresh=0.5)
    assert written == [out / "scene.png"]
    picture = read_image(out / "scene.png")
    assert picture.shape == image.shape
    cfg.data.input_size = 128
    cfg.decode = DecodeConfig(top_k=20, score_thresh=0.5, nms_thresh=0.1)
    expected = Predictor(model, cfg, SYNTHETIC, device="cpu").predict_images([image])[0]
    assert len(expected["scores"]) > 0
    colors = class_colors(len(SYNTHETIC))
    best = expected["polygons"][0].numpy()
    assert colour_fraction(picture, best, colors[int(expected["classes"][0])]) >= 0.6
    # With test-time augmentation: the picture of the four views' merged predictions.
    flipped = visualize_checkpoint(images, tmp_path / "tiny.pt", tmp_path / "tta", score_thresh=0.5,
                                   tta="flips")
    merged = Predictor(model, cfg, SYNTHETIC, device="cpu", tta="flips").predict_images([image])[0]
    np.testing.assert_array_equal(read_image(flipped[0]), draw_detections(image, merged, SYNTHETIC))
    with pytest.raises(SystemExit):
        load_tool("visualize").main(["--images", str(images), "--out", str(tmp_path / "x"), "--det-dir",
                                     str(tmp_path), "--tta", "flips"])


# --------------------------------------------------------------------------- augmentation grid
def test_augmentation_grid(tmp_path: Path) -> None:
    from bbavectors.data.dataset import DotaDataset
    from bbavectors.data.synthetic import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "syn", 3, seed=1, image_size=160, progress=False,
                                  size_range=(14.0, 30.0), num_objects=(6, 10))
    augment = AugmentConfig(rotate=0.5, rotate_range=30.0)
    dataset = DotaDataset(root, None, SYNTHETIC, input_size=96, augment=augment)
    n, cols, gap = 5, 3, 4
    grid = augmentation_grid(dataset, n, cols, seed=7, gap=gap)
    assert grid.shape == (2 * 96 + 3 * gap, 3 * 96 + 4 * gap, 3)
    assert (grid[:gap] == 255).all() and (grid[-gap:] == 255).all()
    # Cell 4 (row 1, col 1) shows image 4 % 3 with augmentation seed 7 + 4: its boxes are drawn there.
    sample = dataset.load_sample(4 % len(dataset), rng=np.random.default_rng(7 + 4))
    cell = grid[gap + 96 + gap:gap + 2 * 96 + gap, gap + 96 + gap:gap + 2 * 96 + gap]
    colors = class_colors(len(SYNTHETIC))
    polys, classes, difficult = (sample[k].numpy() for k in ("polygons", "classes", "difficult"))
    inside = [i for i in range(len(polys)) if difficult[i] == 0 and polys[i].min() > 2 and polys[i].max() < 94
              and np.ptp(polys[i][0::2]) > 6]
    assert inside, "the sample should hold a fully visible object"
    fractions = [colour_fraction(cell, polys[i], colors[int(classes[i])]) for i in inside]
    assert np.median(fractions) >= 0.8
    # The command line writes the same grid.
    cfg = Config()
    cfg.data.input_size = 96
    cfg.augment = augment
    save_config(cfg, tmp_path / "cfg.yaml")
    out = tmp_path / "grid"
    run_tool("visualize", ["--images", str(root / "images"), "--out", str(out), "--grid", str(n),
                           "--cols", str(cols), "--seed", "7", "--config", str(tmp_path / "cfg.yaml"),
                           "--classes", "synthetic"])
    np.testing.assert_array_equal(read_image(out / "augmentation_grid.png"), grid)
    with pytest.raises(ValueError, match=">= 1"):
        augmentation_grid(dataset, 0, 3)
