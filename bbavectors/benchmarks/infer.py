"""Inference benchmark: patches per second, and one whole scene end to end, ours vs the original's way.

Measured in one run, on one device, with one model (random weights of ``--backbone``, or a
``--checkpoint``), medians over repeats (CUDA timings are synchronised):

* **patches**: images/s at batch 1 (model only; model + decode) and at ``--batch-size`` (model only;
  model + decode). Inputs are letterboxed uint8 batches already on the device; normalisation is
  included (it runs on the device in every mode).
* **scene, ours** (:func:`bbavectors.inference.scenes.predict_scene`): read the scene file, upload it
  once, cut windows on the device, batched model calls, one batched decode per batch, per-class rotated
  NMS merge on the device.
* **scene, baseline** (the original pipeline, reimplemented honestly with our own parts so that only
  the pipeline differs): read the scene, cut every window (padded at the border) and **write it as a
  PNG file** (DOTA_devkit's split), then for each patch file: read, letterbox, model + decode at
  **batch 1**, results written as Task1 text files of patches; finally read them back and merge with
  :func:`DOTA_devkit.merge.merge_detections` (NumPy / shapely).

Random weights put every heatmap peak near the prior sigmoid(-2.19) = 0.1 (measured: 0.10 to 0.115),
so a score threshold would give either nothing or every peak. With random weights the decode therefore
keeps exactly ``--detections-per-window`` candidates per window (``top_k``, threshold 0), a realistic
load for the per-window NMS and the merge; the number of final detections is printed with the times.
Random ``wh`` vectors would also make arbitrary (self-intersecting) quadrilaterals, whose IoU is not
meaningful; the random model's ``wh`` head is therefore set to output one fixed 32 x 16 px box
(:func:`fixed_box_heads`), so that neighbouring candidates overlap and the NMS works as with real
boxes (and both pipelines, whose NMS implementations differ, find the same detections).

**PyTorch eager vs ONNX Runtime** (:func:`run_onnx_benchmark`): per trunk, the same random-weight
model exported with the decoder inside (:func:`bbavectors.export.onnx_export.export_onnx`) and run by
a :class:`~bbavectors.inference.predictor.Predictor` with an ONNX Runtime backend, the path of
``tools/test.py --onnx``: batch-1 patches (model + decode) per graph optimisation level, the graph
without the decoder (decode in PyTorch), and one whole scene; detections of both sides are matched
and their largest corner difference reported.

Library: :func:`run_benchmark` / :func:`run_onnx_benchmark` return JSON-able dicts and
:func:`format_table` / :func:`format_onnx_table` make text tables; ``tools/benchmark.py infer``
parses the options and prints.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from DOTA_devkit.image_io import read_image_bgr
from DOTA_devkit.merge import merge_detections
from DOTA_devkit.split import sliding_windows
from DOTA_devkit.task1 import ClassDetections, read_task1_dir, write_task1_dir

from ..config import DOWN_RATIO, Config
from ..data.image_io import read_image, write_image
from ..data.letterbox import normalize_images
from ..inference.predictor import Predictor, concat_detections
from ..inference.scenes import (
    SceneSettings,
    merge_detections_nms,
    predict_windows,
    scene_to_tensor,
    scene_windows,
)
from ..runtime import cpu_model_name, resolve_device

__all__ = [
    "InferBenchmarkSettings",
    "build_benchmark_predictor",
    "fixed_box_heads",
    "make_benchmark_scene",
    "bench_patches",
    "scene_ours",
    "scene_baseline",
    "run_benchmark",
    "format_table",
    "OnnxBenchmarkSettings",
    "run_onnx_benchmark",
    "format_onnx_table",
]

logger = logging.getLogger(__name__)

#: Classes of the random-weight model (DOTA v1.0 has 15).
RANDOM_MODEL_CLASSES = 15
#: Candidates kept per window / patch with random weights (see the module docstring).
RANDOM_DETECTIONS_PER_WINDOW = 50


@dataclass
class InferBenchmarkSettings:
    """Everything a benchmark run uses (printed with the results)."""

    backbone: str = "resnet18"
    head_width: int = 64
    input_size: int = 608
    checkpoint: str | None = None
    device: str = "auto"
    amp: str = "none"
    batch_size: int = 16
    patch_iters: int = 20
    warmup: int = 3
    scene_size: int = 4000
    subsize: int = 608
    gap: int = 100
    scene_repeats: int = 3
    score_thresh: float | None = None
    detections_per_window: int = RANDOM_DETECTIONS_PER_WINDOW
    #: CPU threads of torch (None: its default); 1 gives steadier CPU timings on a busy machine.
    threads: int | None = None
    seed: int = 0
    #: The predictor's memory format (None: its default, channels-last) and batch-norm folding.
    channels_last: bool | None = None
    fuse_batch_norm: bool = True


def fixed_box_heads(model: nn.Module, width: float = 32.0, height: float = 16.0) -> None:
    """Make a CTRBOX's ``wh`` and ``cls_theta`` heads output one axis-aligned ``width x height`` px box
    everywhere (last convs: zero weights, constant biases); the other heads keep their weights."""
    heads = getattr(model, "heads", None)
    wh, theta = getattr(heads, "wh", None), getattr(heads, "cls_theta", None)
    if not (isinstance(wh, nn.Sequential) and isinstance(theta, nn.Sequential)):
        raise TypeError("expected a CTRBOX with heads.wh and heads.cls_theta Sequential heads")
    d = float(getattr(model, "down_ratio", DOWN_RATIO))
    hw, hh = width / 2 / d, height / 2 / d
    # t, r, b, l vectors (x, y each), then the external box's w, h; in output-stride units.
    values = [0.0, -hh, hw, 0.0, 0.0, hh, -hw, 0.0, width / d, height / d]
    with torch.no_grad():
        for seq, bias in ((wh, values), (theta, [10.0])):
            last = seq[-1]
            assert isinstance(last, nn.Conv2d) and last.bias is not None
            last.weight.zero_()
            last.bias.copy_(torch.tensor(bias))


def build_benchmark_predictor(s: InferBenchmarkSettings) -> Predictor:
    """The checkpoint's model, or a random-weight model of ``s.backbone`` (no download)."""
    if s.checkpoint is not None:
        return Predictor.from_checkpoint(s.checkpoint, device=s.device, batch_size=s.batch_size, amp=s.amp,
                                         score_thresh=s.score_thresh, channels_last=s.channels_last,
                                         fuse_batch_norm=s.fuse_batch_norm)
    from ..models.builder import build_model

    torch.manual_seed(s.seed)
    cfg = Config()
    cfg.model.backbone = s.backbone
    cfg.model.head_width = s.head_width
    cfg.model.pretrained = None
    cfg.data.input_size = s.input_size
    cfg.decode.top_k = s.detections_per_window
    classes = [f"class{i}" for i in range(RANDOM_MODEL_CLASSES)]
    model = build_model(cfg, len(classes))
    fixed_box_heads(model)
    thresh = s.score_thresh if s.score_thresh is not None else 0.0
    return Predictor(model, cfg, classes, device=s.device, batch_size=s.batch_size, amp=s.amp,
                     score_thresh=thresh, channels_last=s.channels_last, fuse_batch_norm=s.fuse_batch_norm)


def make_benchmark_scene(size: int, seed: int = 0) -> NDArray[np.uint8]:
    """A ``(size, size, 3)`` uint8 aerial-like picture: smooth colour field, noise and random boxes."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 200, size=(max(size // 64, 2), max(size // 64, 2), 3), dtype=np.uint8)
    img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    noise = rng.integers(0, 30, size=img.shape, dtype=np.uint8)
    img = np.minimum(img.astype(np.int16) + noise, 255).astype(np.uint8)
    for _ in range(max(size * size // 40000, 1)):
        cx, cy = rng.uniform(0, size, 2)
        w, h = rng.uniform(10, 60), rng.uniform(6, 30)
        box = cv2.boxPoints(((float(cx), float(cy)), (float(w), float(h)), float(rng.uniform(0, 180))))
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.fillPoly(img, [np.round(box).astype(np.int32)], color)
    return img


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn: Callable[[], object], iters: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_patches(predictor: Predictor, batch_size: int, iters: int, warmup: int) -> dict[str, float]:
    """Images/s of model only and model + decode, at batch 1 and ``batch_size``."""
    s = predictor.input_size
    gen = torch.Generator().manual_seed(0)
    out: dict[str, float] = {}
    for b in sorted({1, batch_size}):
        images = torch.randint(0, 256, (b, 3, s, s), dtype=torch.uint8, generator=gen).to(predictor.device)
        letterbox = torch.tensor([[1.0, 0.0, 0.0]] * b)
        t_model = _median_seconds(partial(predictor.forward, images), iters, warmup, predictor.device)
        t_full = _median_seconds(partial(predictor.predict_batch, images, letterbox), iters, warmup,
                                 predictor.device)
        out[f"batch{b}_model_img_s"] = b / t_model
        out[f"batch{b}_model_decode_img_s"] = b / t_full
    return out


def scene_ours(
    predictor: Predictor, scene_path: Path, settings: SceneSettings
) -> tuple[dict[str, float], int]:
    """Seconds of read / windows + model + decode / merge / total for one scene file (rate 1, as
    :func:`~bbavectors.inference.scenes.predict_scene` runs it), and the number of detections."""
    _sync(predictor.device)
    t0 = time.perf_counter()
    image = read_image(scene_path)
    t1 = time.perf_counter()
    windows = scene_windows(image.shape[0], image.shape[1], settings.subsize, settings.gap)
    scene = scene_to_tensor(image, predictor.device)
    parts = predict_windows(predictor, scene, windows, settings.subsize,
                            settings.window_batch or predictor.batch_size)
    _sync(predictor.device)
    t2 = time.perf_counter()
    with torch.inference_mode():
        dets = merge_detections_nms(concat_detections(parts, predictor.device), settings.nms_thresh)
    n = int(dets["scores"].numel())
    _sync(predictor.device)
    t3 = time.perf_counter()
    return {"read": t1 - t0, "model_decode": t2 - t1, "merge": t3 - t2, "total": t3 - t0}, n


def _split_to_files(scene_path: Path, patch_dir: Path, subsize: int, gap: int) -> list[Path]:
    """The split tool's way: every window padded to ``subsize`` and written as a PNG file."""
    img = read_image_bgr(scene_path)
    h, w = img.shape[:2]
    paths = []
    for left, up in sliding_windows(h, w, subsize, gap):
        patch = np.zeros((subsize, subsize, 3), dtype=np.uint8)
        crop = img[up:up + subsize, left:left + subsize]
        patch[:crop.shape[0], :crop.shape[1]] = crop
        path = patch_dir / f"{scene_path.stem}__1__{left}___{up}.png"
        cv2.imwrite(str(path), patch)
        paths.append(path)
    return paths


def scene_baseline(predictor: Predictor, scene_path: Path, settings: SceneSettings,
                   work_dir: Path) -> tuple[dict[str, float], int]:
    """Seconds of split to PNG files / batch-1 tests writing Task1 files / text merge / total, and
    the number of detections."""
    patch_dir, result_dir = work_dir / "patches", work_dir / "results"
    patch_dir.mkdir(parents=True, exist_ok=True)
    _sync(predictor.device)
    t0 = time.perf_counter()
    paths = _split_to_files(scene_path, patch_dir, settings.subsize, settings.gap)
    t1 = time.perf_counter()
    per_class: dict[int, tuple[list[str], list[np.ndarray], list[np.ndarray]]] = {
        k: ([], [], []) for k in range(len(predictor.classes))}
    for path in paths:
        dets = predictor.predict_images([read_image(path)])[0]
        polys, scores = dets["polygons"].numpy(), dets["scores"].numpy()
        classes = dets["classes"].numpy()
        for k in np.unique(classes):
            sel = classes == k
            ids, sc, po = per_class[int(k)]
            ids.extend([path.stem] * int(sel.sum()))
            sc.append(scores[sel].astype(np.float64))
            po.append(polys[sel].astype(np.float64))
    patch_dets = {
        predictor.classes[k]: ClassDetections(
            ids, np.concatenate(sc) if sc else np.zeros(0), np.concatenate(po) if po else np.zeros((0, 8)))
        for k, (ids, sc, po) in per_class.items()}
    write_task1_dir(result_dir, patch_dets, predictor.classes)
    t2 = time.perf_counter()
    merged = merge_detections(read_task1_dir(result_dir), nms_thresh=settings.nms_thresh)
    n = sum(len(d.scores) for d in merged.values())
    t3 = time.perf_counter()
    return {"read": t1 - t0, "model_decode": t2 - t1, "merge": t3 - t2, "total": t3 - t0}, n


def hardware_description(device: torch.device) -> str:
    """GPU name or CPU model, cores and library versions."""
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = f"CPU {cpu_model_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    return f"{what}; torch {torch.__version__}"


def run_benchmark(s: InferBenchmarkSettings) -> dict[str, Any]:
    """Run every measurement; returns a JSON-able dict (settings, hardware, results)."""
    device = resolve_device(s.device)
    if s.threads is not None:
        torch.set_num_threads(s.threads)
    predictor = build_benchmark_predictor(s)
    results: dict[str, Any] = {"settings": asdict(s), "hardware": hardware_description(device)}
    results["patches"] = bench_patches(predictor, s.batch_size, s.patch_iters, s.warmup)
    scene_settings = SceneSettings(subsize=s.subsize, gap=s.gap, window_batch=s.batch_size)
    results["windows"] = len(sliding_windows(s.scene_size, s.scene_size, s.subsize, s.gap))
    with tempfile.TemporaryDirectory(prefix="bbav_bench_") as tmp:
        scene_path = Path(tmp) / "scene.png"
        write_image(scene_path, make_benchmark_scene(s.scene_size, s.seed))
        scene_ours(predictor, scene_path, scene_settings)  # warm-up (allocator, cuDNN autotune)
        ours, base = [], []
        for i in range(s.scene_repeats):  # interleaved: drifts of a shared machine hit both alike
            ours.append(scene_ours(predictor, scene_path, scene_settings))
            base.append(scene_baseline(predictor, scene_path, scene_settings, Path(tmp) / f"base{i}"))
    def medians(runs: list[tuple[dict[str, float], int]]) -> dict[str, float]:
        return {k: statistics.median(t[k] for t, _ in runs) for k in runs[0][0]}

    t_ours, t_base = medians(ours), medians(base)
    results["scene"] = {
        "ours_s": t_ours["total"], "baseline_s": t_base["total"],
        "speedup": t_base["total"] / t_ours["total"],
        "ours_parts_s": t_ours, "baseline_parts_s": t_base,
        "ours_detections": ours[0][1], "baseline_detections": base[0][1],
    }
    return results


def format_table(r: dict[str, Any]) -> str:
    """A small text table of :func:`run_benchmark`'s results."""
    s, p, sc = r["settings"], r["patches"], r["scene"]
    b = s["batch_size"]
    model = s["checkpoint"] or (f"{s['backbone']} (random weights, head width {s['head_width']}, "
                                f"{s['detections_per_window']} candidates per window)")
    lines = [
        f"hardware: {r['hardware']}",
        f"model: {model}, input {s['input_size']}, amp {s['amp']}, channels-last "
        f"{'default' if s.get('channels_last') is None else s['channels_last']}, batch norms folded "
        f"{s.get('fuse_batch_norm', True)}",
        "",
        "patches (images/s, median)      model only   model + decode",
        *(f"  batch {k:<3d}                   {p[f'batch{k}_model_img_s']:10.1f}   "
          f"{p[f'batch{k}_model_decode_img_s']:14.1f}" for k in sorted({1, b})),
        "",
        f"one {s['scene_size']}x{s['scene_size']} scene, {r['windows']} windows of {s['subsize']} "
        f"(gap {s['gap']}), median of {s['scene_repeats']}:",
        f"  ours (windows on the fly, batch {b}, device merge)   {sc['ours_s']:8.3f} s  "
        f"({sc['ours_detections']} detections)",
        f"  baseline (PNG patches, batch 1, text merge)       {sc['baseline_s']:8.3f} s  "
        f"({sc['baseline_detections']} detections)",
        f"  speed-up                                          {sc['speedup']:8.2f} x",
        "  parts (s)         read / split   model + decode    merge",
        *(f"  {name:<16}{parts['read']:14.3f}{parts['model_decode']:17.3f}{parts['merge']:9.3f}"
          for name, parts in (("ours", sc["ours_parts_s"]), ("baseline", sc["baseline_parts_s"]))),
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# PyTorch eager vs ONNX Runtime on the CPU
# ----------------------------------------------------------------------------------------------
@dataclass
class OnnxBenchmarkSettings:
    """PyTorch eager vs ONNX Runtime, fp32, CPU (module docstring)."""

    backbones: tuple[str, ...] = ("resnet18", "mobilenet_v2")
    head_width: int = 64
    input_size: int = 608
    iters: int = 5
    warmup: int = 2
    scene_size: int = 4000
    subsize: int = 608
    gap: int = 100
    scene_repeats: int = 3
    #: Threads of both runtimes (None: the cores this process may use).
    threads: int | None = None
    optimization_levels: tuple[str, ...] = ("all", "basic", "none")
    decoder_outside: bool = True
    detections_per_window: int = RANDOM_DETECTIONS_PER_WINDOW
    seed: int = 0


class _HeadsOnly(nn.Module):
    """The model without the decoder: normalised float input -> the four head maps (a tuple)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return out["hm"], out["wh"], out["reg"], out["cls_theta"]


def _export_heads_only(model: nn.Module, path: Path, size: int) -> None:
    example = torch.randn(1, 3, size, size)
    torch.onnx.export(_HeadsOnly(model).eval(), (example,), str(path), input_names=["x"],
                      output_names=["hm", "wh", "reg", "cls_theta"], opset_version=17, dynamo=True,
                      verbose=False, external_data=False)


def _max_difference(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]
                    ) -> tuple[float, int, int]:
    """Largest matched corner difference (px), unmatched detections and pairs over image pairs."""
    from ..export.check import compare_detections

    box, unmatched, pairs = 0.0, 0, 0
    for x, y in zip(a, b):
        check = compare_detections(x, y, cutoff=0.0)
        box = max(box, check.max_box_diff)
        unmatched, pairs = unmatched + check.unmatched, pairs + check.num_matched
    return box, unmatched, pairs


def _bench_onnx_backbone(s: OnnxBenchmarkSettings, backbone: str, work: Path, threads: int
                         ) -> dict[str, Any]:
    import onnxruntime as ort

    from ..decode import decode_topk, select_detections
    from ..export.onnx_export import export_onnx
    from ..inference.predictor import OnnxBackend
    from ..inference.scenes import predict_scene

    eager = build_benchmark_predictor(InferBenchmarkSettings(
        backbone=backbone, head_width=s.head_width, input_size=s.input_size, device="cpu", batch_size=1,
        detections_per_window=s.detections_per_window, seed=s.seed))
    assert eager.model is not None
    cfg, d = eager.cfg, eager.decode_cfg
    t0 = time.perf_counter()
    path = export_onnx(eager.model, work / f"{backbone}.onnx", input_size=s.input_size, top_k=d.top_k,
                       cls_theta_thresh=d.cls_theta_thresh, rectangles=d.rectangles,
                       nms_thresh=d.nms_thresh, score_thresh=d.score_thresh,
                       mean=cfg.data.mean, std=cfg.data.std, classes=eager.classes)
    export_s = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(s.seed)
    images = torch.randint(0, 256, (1, 3, s.input_size, s.input_size), dtype=torch.uint8, generator=gen)
    letterbox = torch.tensor([[1.0, 0.0, 0.0]])
    row: dict[str, Any] = {"backbone": backbone, "export_s": export_s}
    row["eager_ms"] = 1e3 * _median_seconds(partial(eager.predict_batch, images, letterbox), s.iters,
                                           s.warmup, eager.device)
    reference = eager.predict_batch(images, letterbox)
    ort_predictors = {}
    for level in s.optimization_levels:
        backend = OnnxBackend(path, threads=threads, optimization=level)
        pred = Predictor(backend, cfg, eager.classes, device="cpu", batch_size=1)
        ort_predictors[level] = pred
        row[f"ort_{level}_ms"] = 1e3 * _median_seconds(partial(pred.predict_batch, images, letterbox),
                                                      s.iters, s.warmup, pred.device)
        row[f"ort_{level}_max_box_diff"], row[f"ort_{level}_unmatched"], row["pairs"] = _max_difference(
            reference, pred.predict_batch(images, letterbox))
    if s.decoder_outside:
        heads = work / f"{backbone}_heads.onnx"
        _export_heads_only(eager.model, heads, s.input_size)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(heads), sess_options=options, providers=["CPUExecutionProvider"])

        def outside() -> list[dict[str, torch.Tensor]]:
            x = normalize_images(images, cfg.data.mean, cfg.data.std).numpy()
            hm, wh, reg, theta = (torch.from_numpy(o) for o in session.run(None, {"x": x}))
            outputs = {"hm": hm, "wh": wh, "reg": reg, "cls_theta": theta}
            with torch.inference_mode():
                top = decode_topk(outputs, d.top_k, d.cls_theta_thresh, eager.down_ratio, d.rectangles,
                                  eager.grid_offset, d.centre_shift)
                return select_detections(*top, d, letterbox)

        row["ort_decoder_outside_ms"] = 1e3 * _median_seconds(outside, s.iters, s.warmup, eager.device)
        row["ort_decoder_outside_max_box_diff"] = _max_difference(reference, outside())[0]
    if s.scene_repeats > 0:
        scene = make_benchmark_scene(s.scene_size, s.seed)
        settings = SceneSettings(subsize=s.subsize, gap=s.gap, window_batch=1)
        best = ort_predictors[s.optimization_levels[0]]
        eager_t, ort_t = [], []
        for _ in range(s.scene_repeats):  # interleaved: drifts of a shared machine hit both alike
            t = time.perf_counter()
            eager_dets = predict_scene(eager, scene, settings)
            eager_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            ort_dets = predict_scene(best, scene, settings)
            ort_t.append(time.perf_counter() - t)
        row["scene_eager_s"], row["scene_ort_s"] = statistics.median(eager_t), statistics.median(ort_t)
        row["scene_detections"] = int(eager_dets["scores"].numel())
        row["scene_max_box_diff"], row["scene_unmatched"], _ = _max_difference([eager_dets], [ort_dets])
    return row


def run_onnx_benchmark(s: OnnxBenchmarkSettings, work_dir: Path | None = None) -> dict[str, Any]:
    """Every measurement of :class:`OnnxBenchmarkSettings`; a JSON-able dict (settings, hardware, rows)."""
    from ..export.onnx_runner import usable_cores

    threads = s.threads or usable_cores()
    torch.set_num_threads(threads)
    device = torch.device("cpu")
    result: dict[str, Any] = {"settings": asdict(s), "threads": threads}
    import onnxruntime as ort

    result["hardware"] = f"{hardware_description(device)}; onnxruntime {ort.__version__}"
    result["windows"] = len(sliding_windows(s.scene_size, s.scene_size, s.subsize, s.gap))
    with tempfile.TemporaryDirectory(prefix="bbav_onnx_bench_") as tmp:
        result["backbones"] = [_bench_onnx_backbone(s, b, Path(tmp), threads) for b in s.backbones]
    return result


def format_onnx_table(r: dict[str, Any]) -> str:
    """:func:`run_onnx_benchmark`'s results as a text table."""
    s = r["settings"]
    levels = s["optimization_levels"]
    lines = [
        f"hardware: {r['hardware']}; {r['threads']} threads for both runtimes",
        f"fp32, batch 1, {s['input_size']}x{s['input_size']}, random weights (head width {s['head_width']}, "
        f"{s['detections_per_window']} candidates per image), model + decode, median of {s['iters']} "
        f"after {s['warmup']} warm-up",
        "",
        "backbone        eager ms  " + "  ".join(f"ORT {lv:>5} ms" for lv in levels)
        + ("  ORT heads+torch decode ms" if s["decoder_outside"] else "") + "  speed-up  max |box diff| px",
    ]
    for b in r["backbones"]:
        first = b[f"ort_{levels[0]}_ms"]
        diff = max(b[f"ort_{lv}_max_box_diff"] for lv in levels)
        lines.append(
            f"{b['backbone']:<14}{b['eager_ms']:10.1f}  "
            + "  ".join(f"{b[f'ort_{lv}_ms']:12.1f}" for lv in levels)
            + (f"  {b['ort_decoder_outside_ms']:25.1f}" if s["decoder_outside"] else "")
            + f"  {b['eager_ms'] / first:7.2f}x  {diff:.2e} ({b['pairs']} pairs, "
            f"{sum(b[f'ort_{lv}_unmatched'] for lv in levels)} unmatched)")
    if s["scene_repeats"] > 0:
        lines += ["", f"one {s['scene_size']}x{s['scene_size']} scene, {r['windows']} windows of "
                  f"{s['subsize']} (gap {s['gap']}) at batch 1, median of {s['scene_repeats']}:",
                  "backbone        eager s    ORT s  speed-up  detections  max |box diff| px"]
        for b in r["backbones"]:
            lines.append(f"{b['backbone']:<14}{b['scene_eager_s']:8.2f}  {b['scene_ort_s']:7.2f}  "
                         f"{b['scene_eager_s'] / b['scene_ort_s']:7.2f}x  {b['scene_detections']:10d}  "
                         f"{b['scene_max_box_diff']:.2e} ({b['scene_unmatched']} unmatched)")
    return "\n".join(lines)
