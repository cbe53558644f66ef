"""Inference: predictor geometry (letterbox inverse), whole scenes vs per-window predictions merged by
hand, window offsets and rates, border objects merged, test runs (Task1, merged, eval, bad inputs).

Fake models produce the head logits a perfect network would give (``bbavectors.targets``), so that
coordinates can be checked exactly; a tiny random resnet18 checks batching and the scene pipeline.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from bbavectors.checkpoint import CheckpointLoadError, save_checkpoint
from bbavectors.config import Config, TargetConfig
from bbavectors.data.dataset import DotaDataset
from bbavectors.data.image_io import write_image
from bbavectors.data.letterbox import letterbox_image
from bbavectors.inference.predictor import Predictor
from bbavectors.inference.runner import (
    DetectionCollector,
    InferenceInputError,
    InferenceOptions,
    run_inference,
)
from bbavectors.inference.scenes import SceneSettings, predict_scene, scene_windows
from bbavectors.models.builder import build_model
from bbavectors.roundtrip import ideal_outputs
from bbavectors.targets import encode_targets
from DOTA_devkit.labels import DotaObject, write_dota_label
from DOTA_devkit.merge import merge_detections
from DOTA_devkit.split import sliding_windows
from DOTA_devkit.task1 import ClassDetections, read_task1_dir

CLASSES = ("plane", "ship")


# ----------------------------------------------------------------------------------- helpers
def tiny_cfg(input_size: int = 64) -> Config:
    cfg = Config()
    cfg.model.backbone = "resnet18"
    cfg.model.head_width = 16
    cfg.model.pretrained = None
    cfg.data.input_size = input_size
    cfg.decode.top_k = 40
    return cfg


def perfect_logits(polygons: list[np.ndarray], classes: list[np.ndarray], size: int,
                   num_classes: int) -> dict[str, Tensor]:
    """Head logits of a perfect network for these objects (network pixels) on ``size x size`` inputs."""
    targets = encode_targets(
        [torch.as_tensor(p, dtype=torch.float32).reshape(-1, 8) for p in polygons],
        [torch.as_tensor(c, dtype=torch.long).reshape(-1) for c in classes],
        [torch.zeros(len(c), dtype=torch.long) for c in classes],
        num_classes, (size, size), TargetConfig())
    return ideal_outputs(targets)


class FixedBoxModel(nn.Module):
    """Sees nothing; always 'detects' the same objects at fixed network-input positions."""

    def __init__(self, polygons: np.ndarray, classes: np.ndarray, size: int, num_classes: int) -> None:
        super().__init__()
        self.outputs = perfect_logits([polygons], [classes], size, num_classes)
        self.inputs: list[Tensor] = []

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        self.inputs.append(x.detach().clone())
        return {k: v.to(x.device).expand(x.shape[0], -1, -1, -1) for k, v in self.outputs.items()}


class BlobModel(nn.Module):
    """Detects white axis-aligned rectangles (all channels bright) as class 0, perfectly. Each object's
    peak logit is its visible area / 40, so a whole view of an object outscores a cut one."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        size = x.shape[-1]
        bright = (x > 0).all(dim=1).cpu().numpy().astype(np.uint8)
        polys, classes = [], []
        for mask in bright:
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
            boxes = [(s[0], s[1], s[0] + s[2], s[1] + s[3]) for s in stats[1:n] if s[2] >= 4 and s[3] >= 4]
            polys.append(np.array([[x0, y0, x1, y0, x1, y1, x0, y1] for x0, y0, x1, y1 in boxes],
                                  dtype=np.float32).reshape(-1, 8))
            classes.append(np.zeros(len(boxes), np.int64))
        targets = encode_targets([torch.from_numpy(p) for p in polys], [torch.from_numpy(c) for c in classes],
                                 [torch.zeros(len(c), dtype=torch.long) for c in classes],
                                 self.num_classes, (size, size), TargetConfig())
        out = ideal_outputs(targets)
        # One isolated peak per object (slots keep the input order: slot k is object k).
        hm = torch.full_like(out["hm"], -20.0)
        for b, (p, c) in enumerate(zip(polys, classes)):
            for k in range(len(p)):
                area = float((p[k, 2] - p[k, 0]) * (p[k, 5] - p[k, 1]))
                hm[b, int(c[k])].view(-1)[targets["ind"][b, k]] = area / 40.0
        out["hm"] = hm
        return {k: v.to(x.device) for k, v in out.items()}


def fake_predictor(model: nn.Module, input_size: int = 64, device: str = "cpu", **kw: object) -> Predictor:
    cfg = tiny_cfg(input_size)
    cfg.decode.score_thresh = 0.5
    return Predictor(model, cfg, CLASSES, device=device, **kw)  # type: ignore[arg-type]


def tiny_predictor(input_size: int = 64, score_thresh: float = 0.1, batch_size: int = 4) -> Predictor:
    torch.manual_seed(0)
    cfg = tiny_cfg(input_size)
    return Predictor(build_model(cfg, len(CLASSES)), cfg, CLASSES, device="cpu", batch_size=batch_size,
                     score_thresh=score_thresh)


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float64)


def rotated(cx: float, cy: float, w: float, h: float, deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    u, n = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
    c = np.array([cx, cy])
    hu, hn = u * w / 2, n * h / 2
    return np.concatenate([c - hu - hn, c + hu - hn, c + hu + hn, c - hu + hn])


def match(found: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """For each expected polygon, the smallest max-corner distance to a found one (cyclic corners)."""
    out = []
    for e in expected.reshape(-1, 4, 2):
        best = np.inf
        for f in found.reshape(-1, 4, 2):
            for k in range(4):
                best = min(best, float(np.abs(np.roll(f, k, axis=0) - e).max()))
        out.append(best)
    return np.array(out)


def white_rects_scene(h: int, w: int, boxes: list[np.ndarray]) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    for b in boxes:
        x0, y0, x1, y1 = int(b[0]), int(b[1]), int(b[4]), int(b[5])
        img[y0:y1, x0:x1] = 255
    return img


# ----------------------------------------------------------------------------------- predictor
def test_predictor_inverts_the_letterbox_exactly_and_sees_training_geometry() -> None:
    size = 64
    objects = np.stack([rotated(30.0, 14.0, 22.0, 9.0, 30.0), rect(4.0, 4.0, 16.0, 12.0)])
    model = FixedBoxModel(objects, np.array([1, 0]), size, len(CLASSES))
    predictor = fake_predictor(model)
    image = texture(40, 100)
    dets = predictor.predict_images([image])[0]
    scale = 64 / 100  # hand-derived: min(64 / 40, 64 / 100)
    assert dets["polygons"].shape == (2, 8)
    assert sorted(dets["classes"].tolist()) == [0, 1]
    assert (dets["scores"] > 0.99).all()
    err = match(dets["polygons"].double().numpy(), objects / scale)
    assert err.max() < 2e-3, err
    # Regression (original flaw 6: train letterboxes, test stretches; /255 - 0.5 BGR): the model
    # sees exactly the evaluation canvas of training, RGB, normalised with the config's mean/std.
    ds_canvas, _ = letterbox_image(image, size)
    mean = torch.tensor(predictor.cfg.data.mean).view(3, 1, 1)
    std = torch.tensor(predictor.cfg.data.std).view(3, 1, 1)
    expected = (torch.from_numpy(ds_canvas).permute(2, 0, 1).float() / 255 - mean) / std
    torch.testing.assert_close(model.inputs[0][0], expected, atol=1e-5, rtol=1e-5)


def test_predictor_input_equals_the_dataset_evaluation_sample(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    image = texture(50, 90, seed=3)
    write_image(tmp_path / "images" / "a.png", image)
    sample = DotaDataset(tmp_path, None, CLASSES, input_size=64)[0]
    tensor, letterbox = fake_predictor(BlobModel()).preprocess(image)
    assert torch.equal(tensor, sample["image"])
    torch.testing.assert_close(letterbox, sample["letterbox"])


def test_batched_predictions_equal_one_image_at_a_time() -> None:
    # Regression (original flaw 5: decoding worked for batch 1 only).
    predictor = tiny_predictor(batch_size=3)
    images = [texture(64, 64, 1), texture(40, 100, 2), texture(90, 30, 3), texture(64, 64, 4)]
    batched = predictor.predict_images(images)
    assert sum(len(d["scores"]) for d in batched) > 10
    for image, b in zip(images, batched):
        single = predictor.predict_images([image])[0]
        assert torch.equal(single["classes"], b["classes"])
        torch.testing.assert_close(single["scores"], b["scores"], atol=1e-5, rtol=0)
        torch.testing.assert_close(single["polygons"], b["polygons"], atol=1e-3, rtol=0)


def test_bf16_autocast_returns_float32_detections_close_to_float32() -> None:
    fp32 = tiny_predictor(score_thresh=0.0)
    bf16 = Predictor(fp32.model, fp32.cfg, CLASSES, device="cpu", amp="bf16", score_thresh=0.0)
    x = torch.from_numpy(texture(64, 64, 5)).permute(2, 0, 1)[None]
    a, b = fp32.forward(x), bf16.forward(x)
    assert all(v.dtype == torch.float32 for v in b.values())
    # bf16 keeps ~3 significant digits: the logits agree to a few percent of their spread.
    assert (a["hm"] - b["hm"]).abs().max() < 0.1 * a["hm"].std() + 0.05
    assert len(bf16.predict_batch(x)[0]["scores"]) > 0


def test_bad_images_and_settings_are_rejected_clearly() -> None:
    predictor = fake_predictor(BlobModel())
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict_images([np.zeros((10, 10, 3), np.float32)])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        predictor.predict_images([np.zeros((10, 10), np.uint8)])
    with pytest.raises(ValueError, match="amp"):
        fake_predictor(BlobModel(), amp="fp8")
    with pytest.raises(ValueError, match="gap"):
        SceneSettings(subsize=64, gap=64)
    with pytest.raises(ValueError, match="rates"):
        SceneSettings(rates=(0.0,))
    with pytest.raises(ValueError, match="scene"):
        predict_scene(predictor, np.zeros((0, 5, 3), np.uint8))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            fake_predictor(BlobModel(), device="cuda")


def test_checkpoint_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Predictor.from_checkpoint(tmp_path / "missing.pth")
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointLoadError, match="not a usable bbavectors checkpoint"):
        Predictor.from_checkpoint(text)
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointLoadError, match="not a usable bbavectors checkpoint"):
        Predictor.from_checkpoint(other)


def test_from_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = build_model(cfg, len(CLASSES))
    save_checkpoint(tmp_path / "m.pth", model, cfg, CLASSES)
    loaded = Predictor.from_checkpoint(tmp_path / "m.pth", device="cpu", score_thresh=0.05)
    direct = Predictor(model, cfg, CLASSES, device="cpu", score_thresh=0.05)
    assert loaded.classes == CLASSES and loaded.input_size == 64 and loaded.decode_cfg.score_thresh == 0.05
    assert loaded.batch_size == 1  # CPU default: larger batches were measured slower per image
    image = texture(64, 80)
    a, b = loaded.predict_images([image])[0], direct.predict_images([image])[0]
    assert len(a["scores"]) > 0
    torch.testing.assert_close(a["polygons"], b["polygons"])


# ----------------------------------------------------------------------------------- scenes
def test_scene_window_offsets_and_rates_are_exact() -> None:
    size = 64
    box = rotated(30.0, 26.0, 20.0, 8.0, 60.0)
    h, w = 150, 170
    for subsize, gap, rate in ((64, 16, 1.0), (32, 8, 1.0), (64, 16, 0.5), (32, 8, 2.0)):
        predictor = fake_predictor(FixedBoxModel(box[None], np.array([0]), size, len(CLASSES)), batch_size=5)
        settings = SceneSettings(subsize=subsize, gap=gap, rates=(rate,), nms_thresh=0.0)
        dets = predict_scene(predictor, texture(h, w), settings)
        sh, sw = round(h * rate), round(w * rate)
        s = size / subsize  # network pixels per resized-scene pixel
        expected = []
        for left, up in sliding_windows(sh, sw, subsize, gap):
            p = box / s
            p[0::2] += left
            p[1::2] += up
            expected.append(p / rate)
        assert len(dets["scores"]) == len(expected) > 1
        err = match(dets["polygons"].double().numpy(), np.stack(expected))
        assert err.max() < 2e-3, (subsize, gap, rate, err)


def test_scene_equals_each_window_predicted_alone_then_merged_by_hand() -> None:
    predictor = tiny_predictor(batch_size=4)
    scene = texture(150, 170, seed=7)
    settings = SceneSettings(subsize=64, gap=16, nms_thresh=0.1)
    ours = predict_scene(predictor, scene, settings)

    # By hand: cut and pad each window as DOTA's split does, predict it alone, merge with DOTA_devkit.
    per_class: dict[str, tuple[list[str], list[np.ndarray], list[np.ndarray]]] = {
        c: ([], [], []) for c in CLASSES}
    windows = sliding_windows(150, 170, 64, 16)
    assert len(windows) > 4
    for left, up in windows:
        patch = np.zeros((64, 64, 3), np.uint8)
        crop = scene[up:up + 64, left:left + 64]
        patch[:crop.shape[0], :crop.shape[1]] = crop
        d = predictor.predict_images([patch])[0]
        for k, name in enumerate(CLASSES):
            sel = (d["classes"] == k).numpy()
            per_class[name][0].extend([f"S__1__{left}___{up}"] * int(sel.sum()))
            per_class[name][1].append(d["scores"].numpy()[sel].astype(np.float64))
            per_class[name][2].append(d["polygons"].numpy()[sel].astype(np.float64))
    patch_dets = {c: ClassDetections(ids, np.concatenate(sc), np.concatenate(po))
                  for c, (ids, sc, po) in per_class.items()}
    merged = merge_detections(patch_dets, nms_thresh=0.1)
    total = sum(len(m.scores) for m in merged.values())
    assert total > 5
    assert len(ours["scores"]) == total
    for k, name in enumerate(CLASSES):
        sel = ours["classes"] == k
        mine_scores = ours["scores"][sel].double().numpy()
        order = np.argsort(-merged[name].scores, kind="stable")
        np.testing.assert_allclose(mine_scores, merged[name].scores[order], atol=1e-5)
        np.testing.assert_allclose(ours["polygons"][sel].double().numpy(), merged[name].polygons[order],
                                   atol=2e-3)
        assert all(i == "S" for i in merged[name].image_ids)


def test_object_across_a_window_border_becomes_one_detection() -> None:
    # Windows of 64 with gap 16 on a 128 x 160 scene start at x = 0, 48, 96 and y = 0, 48, 64.
    objects = [rect(50, 8, 60, 20),    # inside the overlap of windows x=0 and x=48: seen whole twice
               rect(56, 90, 86, 104),  # cut by the border x = 64 of the first window, whole in x=48
               rect(100, 30, 140, 40)]  # cut by x = 112 of window x=48, whole in x=96
    scene = white_rects_scene(128, 160, objects)
    windows = [rect(left, up, left + 64, up + 64) for left, up in sliding_windows(128, 160, 64, 16)]
    for o in objects:  # each object is whole in some window and cut by another
        inside = [w[0] <= o[0] and o[4] <= w[4] and w[1] <= o[1] and o[5] <= w[5] for w in windows]
        cut = [w[0] < o[4] and o[0] < w[4] and w[1] < o[5] and o[1] < w[5] for w in windows]
        assert any(inside) and sum(cut) > sum(inside) or sum(inside) > 1
    predictor = fake_predictor(BlobModel(), batch_size=4)
    unmerged = predict_scene(predictor, scene, SceneSettings(subsize=64, gap=16, nms_thresh=0.0))
    merged = predict_scene(predictor, scene, SceneSettings(subsize=64, gap=16, nms_thresh=0.1))
    assert len(unmerged["scores"]) > len(objects)
    assert len(merged["scores"]) == len(objects)
    err = match(merged["polygons"].double().numpy(), np.stack(objects))
    assert err.max() < 2e-3, err


def test_scene_windows_cover_the_scene_with_the_split_positions() -> None:
    windows = scene_windows(150, 170, 64, 16)
    assert [(w.left, w.up) for w in windows] == [tuple(p) for p in sliding_windows(150, 170, 64, 16)]
    covered = np.zeros((150, 170), bool)
    for w in windows:
        assert 0 < w.width <= 64 and 0 < w.height <= 64
        covered[w.up:w.up + w.height, w.left:w.left + w.width] = True
    assert covered.all()


# ----------------------------------------------------------------------------------- runs
def cut_patches(scene: np.ndarray, scene_id: str, folder: Path, subsize: int, gap: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for left, up in sliding_windows(scene.shape[0], scene.shape[1], subsize, gap):
        patch = np.zeros((subsize, subsize, 3), np.uint8)
        crop = scene[up:up + subsize, left:left + subsize]
        patch[:crop.shape[0], :crop.shape[1]] = crop
        name = f"{scene_id}__1__{left}___{up}"
        write_image(folder / f"{name}.png", patch)
        names.append(name)
    return names


def test_patch_folder_run_writes_task1_and_merged_scenes_equal_to_scene_mode(tmp_path: Path) -> None:
    objects = [rect(50, 8, 60, 20), rect(56, 90, 86, 104), rect(100, 30, 140, 40)]
    scene = white_rects_scene(128, 160, objects)
    names = cut_patches(scene, "P0007", tmp_path / "patches", 64, 16)
    (tmp_path / "patches" / "broken__1__0___0.png").write_bytes(b"not a png")
    predictor = fake_predictor(BlobModel(), batch_size=4)
    summary = run_inference(predictor, InferenceOptions(
        images=tmp_path / "patches", out=tmp_path / "out", workers=0, pictures=True, progress=False))
    assert summary.num_images == len(names) and summary.num_unreadable == 1
    assert summary.unreadable == ["broken__1__0___0"]
    written = sorted(p.name for p in (tmp_path / "out").glob("Task1_*.txt"))
    assert written == ["Task1_plane.txt", "Task1_ship.txt"]
    patch_level = read_task1_dir(tmp_path / "out")
    assert set(patch_level["plane"].image_ids) <= set(names) and len(patch_level["ship"].scores) == 0
    assert summary.merged_dir == tmp_path / "out" / "merged"
    merged = read_task1_dir(summary.merged_dir)
    assert set(merged["plane"].image_ids) == {"P0007"}
    assert match(merged["plane"].polygons, np.stack(objects)).max() < 0.01
    assert len(merged["plane"].scores) == len(objects)
    assert len(list((tmp_path / "out" / "pictures").glob("*.png"))) == len(names)

    # Scene labels (not patch labels) in the label folder: the merged results are evaluated.
    (tmp_path / "labels").mkdir()
    write_dota_label(tmp_path / "labels" / "P0007.txt", [DotaObject(o, "plane", 0) for o in objects])
    evaluated = run_inference(predictor, InferenceOptions(
        images=tmp_path / "patches", out=tmp_path / "out_eval", workers=0, progress=False,
        eval_labels=tmp_path / "labels"))
    assert evaluated.eval_level == "merged scene" and evaluated.eval_result is not None
    assert evaluated.eval_result.per_class["plane"].num_gt == 3
    assert evaluated.eval_result.per_class["plane"].ap07 == pytest.approx(1.0)

    (tmp_path / "scenes").mkdir()
    write_image(tmp_path / "scenes" / "P0007.png", scene)
    scene_summary = run_inference(predictor, InferenceOptions(
        images=tmp_path / "scenes", out=tmp_path / "out_scenes", scenes=True, workers=0, progress=False,
        scene=SceneSettings(subsize=64, gap=16)))
    assert scene_summary.merged_dir is None
    by_scene = read_task1_dir(tmp_path / "out_scenes")
    assert match(by_scene["plane"].polygons, merged["plane"].polygons).max() < 0.01
    np.testing.assert_allclose(np.sort(by_scene["plane"].scores), np.sort(merged["plane"].scores), atol=1e-4)


def test_scene_run_with_a_perfect_detector_scores_map_1(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labelTxt").mkdir()
    layouts = {"A": [rect(50, 8, 60, 20), rect(56, 90, 86, 104)],
               "B": [rect(100, 30, 140, 40), rect(5, 5, 25, 15)]}
    for scene_id, objects in layouts.items():
        write_image(tmp_path / "images" / f"{scene_id}.png", white_rects_scene(128, 160, objects))
        write_dota_label(tmp_path / "labelTxt" / f"{scene_id}.txt",
                         [DotaObject(o, "plane", 0) for o in objects])
    (tmp_path / "only_a.txt").write_text("A\nmissing_id\n")
    predictor = fake_predictor(BlobModel(), batch_size=4)
    summary = run_inference(predictor, InferenceOptions(
        images=tmp_path / "images", out=tmp_path / "out", scenes=True, eval_labels=tmp_path / "labelTxt",
        workers=1, progress=False, scene=SceneSettings(subsize=64, gap=16)))
    assert summary.eval_result is not None and summary.eval_json is not None and summary.eval_json.is_file()
    plane = summary.eval_result.per_class["plane"]
    assert plane.num_gt == 4 and plane.ap07 == pytest.approx(1.0) and plane.recall == pytest.approx(1.0)
    assert summary.eval_result.map07_present == pytest.approx(1.0)
    only_a = run_inference(predictor, InferenceOptions(
        images=tmp_path / "images", out=tmp_path / "out_a", scenes=True, split=tmp_path / "only_a.txt",
        eval_labels=tmp_path / "labelTxt", workers=0, progress=False,
        scene=SceneSettings(subsize=64, gap=16)))
    assert only_a.num_images == 1
    assert only_a.eval_result is not None and only_a.eval_result.per_class["plane"].num_gt == 2


def test_bad_run_inputs_raise_clear_errors(tmp_path: Path) -> None:
    predictor = fake_predictor(BlobModel())
    (tmp_path / "empty").mkdir()
    with pytest.raises(InferenceInputError, match="no images"):
        run_inference(predictor, InferenceOptions(images=tmp_path / "empty", out=tmp_path / "o", workers=0))
    with pytest.raises(FileNotFoundError):
        run_inference(predictor, InferenceOptions(images=tmp_path / "nope", out=tmp_path / "o", workers=0))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"")
    (tmp_path / "bad" / "y.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(InferenceInputError, match="unreadable"):
        run_inference(predictor, InferenceOptions(images=tmp_path / "bad", out=tmp_path / "o", workers=0,
                                                  progress=False))
    write_image(tmp_path / "bad" / "z.png", texture(20, 20))
    (tmp_path / "split.txt").write_text("nothing_here\n")
    with pytest.raises(InferenceInputError, match="none of the"):
        run_inference(predictor, InferenceOptions(images=tmp_path / "bad", out=tmp_path / "o", workers=0,
                                                  split=tmp_path / "split.txt"))


def test_collector_groups_by_class_and_rejects_bad_indices() -> None:
    c = DetectionCollector(CLASSES)
    c.add("a", {"polygons": torch.arange(16.0).view(2, 8), "scores": torch.tensor([0.9, 0.8]),
                "classes": torch.tensor([1, 0])})
    c.add("b", {"polygons": torch.zeros(0, 8), "scores": torch.zeros(0),
                "classes": torch.zeros(0, dtype=torch.long)})
    r = c.result()
    assert r["ship"].image_ids == ["a"] and r["plane"].image_ids == ["a"]
    np.testing.assert_allclose(r["ship"].polygons[0], np.arange(8.0))
    assert c.num_detections == 2 and c.image_ids == ["a", "b"]
    with pytest.raises(ValueError, match="out of range"):
        c.add("c", {"polygons": torch.zeros(1, 8), "scores": torch.ones(1), "classes": torch.tensor([2])})


# ----------------------------------------------------------------------------------- benchmark
def test_infer_benchmark_smoke_ours_and_baseline_agree() -> None:
    from bbavectors.benchmarks.infer import InferBenchmarkSettings, format_table, run_benchmark

    s = InferBenchmarkSettings(head_width=16, input_size=64, device="cpu", batch_size=4, patch_iters=1,
                               warmup=0, scene_size=100, subsize=64, gap=16, scene_repeats=1,
                               detections_per_window=10)
    r = run_benchmark(s)
    assert r["windows"] == len(sliding_windows(100, 100, 64, 16)) == 4
    assert set(r["patches"]) == {"batch1_model_img_s", "batch1_model_decode_img_s", "batch4_model_img_s",
                                 "batch4_model_decode_img_s"}
    assert all(v > 0 for v in r["patches"].values())
    # Same model, same windows, same decode: both pipelines find the same detections.
    assert r["scene"]["ours_detections"] == r["scene"]["baseline_detections"] > 0
    assert "speed-up" in format_table(r)


# ----------------------------------------------------------------------------------- real data
def test_real_scene_on_the_fly_equals_split_tool_patches_merged(shared_data: Path, tmp_path: Path) -> None:
    """A real DOTA scene: ``--scenes`` (windows cut in memory) gives what DOTA_devkit.split's patch
    files + patch-folder run + merge give, at two rates; evaluation reads the real labels."""
    from DOTA_devkit.classes import DOTA_V1_0
    from DOTA_devkit.split import SplitOptions, split_scene

    scene_dir = shared_data / "dota_examples"
    image = next(p for p in (scene_dir / "images").iterdir() if p.stem == "P0075")
    label = scene_dir / "labelTxt" / "P0075.txt"
    options = SplitOptions(subsize=128, gap=32, rates=(0.25, 0.5))
    for sub in ("images", "labelTxt"):
        (tmp_path / "split" / sub).mkdir(parents=True)
    assert split_scene(image, label, tmp_path / "split", options).error is None
    (tmp_path / "scene").mkdir()
    (tmp_path / "scene" / image.name).symlink_to(image)

    torch.manual_seed(0)
    cfg = tiny_cfg(128)
    predictor = Predictor(build_model(cfg, len(DOTA_V1_0)), cfg, DOTA_V1_0, device="cpu", batch_size=8,
                          score_thresh=0.125)
    patches = run_inference(predictor, InferenceOptions(
        images=tmp_path / "split" / "images", out=tmp_path / "patch_run", workers=0, progress=False,
        eval_labels=scene_dir / "labelTxt"))
    scenes = run_inference(predictor, InferenceOptions(
        images=tmp_path / "scene", out=tmp_path / "scene_run", scenes=True, workers=0, progress=False,
        scene=SceneSettings(subsize=128, gap=32, rates=(0.25, 0.5)), eval_labels=scene_dir / "labelTxt"))
    assert patches.merged_dir is not None and patches.eval_level == "merged scene"
    merged, on_the_fly = read_task1_dir(patches.merged_dir), read_task1_dir(tmp_path / "scene_run")
    assert sum(len(d) for d in on_the_fly.values()) > 5
    for name in DOTA_V1_0:
        a, b = merged[name], on_the_fly[name]
        assert len(a) == len(b), name
        order_a, order_b = np.argsort(-a.scores, kind="stable"), np.argsort(-b.scores, kind="stable")
        np.testing.assert_allclose(a.scores[order_a], b.scores[order_b], atol=1e-5)
        np.testing.assert_allclose(a.polygons[order_a], b.polygons[order_b], atol=2e-3)
    assert patches.eval_result is not None and scenes.eval_result is not None
    for name in DOTA_V1_0:
        assert patches.eval_result.per_class[name].num_gt == scenes.eval_result.per_class[name].num_gt
    assert sum(r.num_gt for r in scenes.eval_result.per_class.values()) > 0
