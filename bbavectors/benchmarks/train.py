"""Training speed: model-only step rate vs the full loop (real PNG files, real loader, device targets).

Measured in one run, on one device, per trunk (default resnet18 and resnet101; 608x608, batch 16,
bf16 autocast, channels_last on CUDA), with the **real training engine**
(:class:`bbavectors.engine.trainer.Trainer`: same optimiser, loss, clipping, non-finite check):

* **model-only**: one real batch is prepared once (uint8 -> device, normalised, targets encoded on the
  device) and reused: each step is forward + loss + backward + clip + optimiser step
  (:meth:`Trainer.optimise`). Targets are *pre-encoded*: this is the ceiling of the architecture.
* **model + targets**: the same batch kept on the device as uint8 images and polygon lists; each
  step also normalises and **encodes the targets on the device** (:meth:`Trainer.train_step` minus
  the loader): the cost of target encoding.
* **full loop**: the real loop, :meth:`Trainer.train_step` on batches from the real
  :class:`~bbavectors.data.dataset.DotaDataset` + ``build_dataloader`` (``--workers`` processes
  decoding PNG files and augmenting) with pinned, non-blocking copies.

Data: ``--num-images`` synthetic 600x600 PNG patches with 50 objects each
(:mod:`bbavectors.data.synthetic`), generated once and cached in ``--data-dir`` (default: a folder
in the system's temporary directory). Each figure is the **median** images/s over ``--windows``
timed windows of ``--steps`` steps, after ``--warmup`` steps (cuDNN autotuning, compile, loader
start-up). The ratio full / model-only says how close the loop runs to the ceiling.

Library: :func:`run_train_benchmark` returns the results, :func:`format_table` makes a text table
of them; ``tools/benchmark.py train ...`` parses the options and prints.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import Config, apply_overrides
from ..data.synthetic import SyntheticParams, ensure_dataset
from ..runtime import cpu_model_name, usable_cores

__all__ = [
    "TrainBenchmarkSettings",
    "benchmark_dataset",
    "bench_backbone",
    "run_train_benchmark",
    "format_table",
    "hardware_summary",
]

logger = logging.getLogger(__name__)

#: The benchmark's data: 600x600 patches with 50 objects each (as the baselines in docs/design.md).
BENCH_IMAGE_SIZE = 600
BENCH_OBJECTS = 50


@dataclass
class TrainBenchmarkSettings:
    """Everything a run uses (printed with the results)."""

    backbones: list[str] = field(default_factory=lambda: ["resnet18", "resnet101"])
    head_width: int = 64
    input_size: int = 608
    batch_size: int = 16
    #: Loader processes: one per usable core, at most 8 (more than the cores only slows a small CPU).
    workers: int = field(default_factory=lambda: min(8, usable_cores()))
    steps: int = 20
    windows: int = 5
    warmup: int = 10
    device: str = "auto"
    amp: str = "bf16"
    channels_last: bool = True
    compile: bool = False
    num_images: int = 256
    data_dir: str | None = None
    seed: int = 0


def benchmark_dataset(root: str | Path | None, num_images: int, seed: int = 0) -> Path:
    """The cached set of 600x600 PNG patches with 50 objects each (generated on first use)."""
    if root is None:
        name = f"bbav_bench_train_{BENCH_IMAGE_SIZE}_{BENCH_OBJECTS}_{num_images}"
        root = Path(tempfile.gettempdir()) / name
    # Objects of 10-70 px leave room for 50 non-overlapping ones in 600x600; nothing held out.
    params = SyntheticParams(image_size=BENCH_IMAGE_SIZE, num_objects=(BENCH_OBJECTS, BENCH_OBJECTS),
                             size_range=(10.0, 70.0), val_fraction=0.0, test_fraction=0.0)
    return ensure_dataset(root, num_images, seed, params)


def hardware_summary(device: torch.device) -> str:
    """GPU name (or CPU model), CPU count and library versions."""
    cpu = cpu_model_name()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU (CPU run)"
    return (f"{gpu}; CPU {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; "
            f"torch {torch.__version__}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_windows(step: Callable[[], object], images_per_step: int, warmup: int, steps: int, windows: int,
                   device: torch.device) -> list[float]:
    """images/s of each of ``windows`` windows of ``steps`` steps, after ``warmup`` steps."""
    for _ in range(warmup):
        step()
    _sync(device)
    rates = []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        rates.append(images_per_step * steps / (time.perf_counter() - t0))
    return rates


def _endless(loader: Any) -> Generator[dict[str, Any], None, None]:
    while True:
        yield from loader


def _bench_config(s: TrainBenchmarkSettings, backbone: str, data_root: Path) -> Config:
    cfg = Config(name=f"bench_{backbone}")
    return apply_overrides(cfg, [
        f"model.backbone={backbone}", "model.pretrained=null", f"model.head_width={s.head_width}",
        f"data.root={data_root}", "data.classes=synthetic", f"data.input_size={s.input_size}",
        f"data.workers={s.workers}", f"train.batch_size={s.batch_size}", f"train.amp={s.amp}",
        f"train.channels_last={str(s.channels_last).lower()}", f"train.compile={str(s.compile).lower()}",
        f"train.device={s.device}", f"train.seed={s.seed}", "train.epochs=1000",
    ])


def bench_backbone(s: TrainBenchmarkSettings, backbone: str, data_root: Path) -> dict[str, Any]:
    """The three rates (module docstring) for one trunk, each a median over windows."""
    from ..engine.distributed import DistInfo
    from ..engine.trainer import Trainer

    cfg = _bench_config(s, backbone, data_root)
    with tempfile.TemporaryDirectory(prefix="bbav_bench_run_") as run_dir:
        trainer = Trainer(cfg, run_dir, dist_info=DistInfo(), progress=False, validation=False,
                          threads=torch.get_num_threads())
        batches = _endless(trainer.train_loader)
        try:
            first = next(batches)
            device_batch = {**first, "images": first["images"].to(trainer.device),
                            "polygons": [p.to(trainer.device) for p in first["polygons"]],
                            "classes": [c.to(trainer.device) for c in first["classes"]],
                            "difficult": [d.to(trainer.device) for d in first["difficult"]]}
            x, targets = trainer.prepare_batch(first)
            b = s.batch_size
            model_only = _timed_windows(lambda: trainer.optimise(x, targets), b, s.warmup, s.steps, s.windows,
                                        trainer.device)
            with_targets = _timed_windows(lambda: trainer.train_step(device_batch), b, s.warmup, s.steps,
                                          s.windows, trainer.device)
            full = _timed_windows(lambda: trainer.train_step(next(batches)), b, s.warmup, s.steps, s.windows,
                                  trainer.device)
            skipped = trainer.nonfinite_total
            amp_used = str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "none (float32)"
            channels_last_used = trainer.channels_last
        finally:
            batches.close()
            trainer.close()
    m, t, f = statistics.median(model_only), statistics.median(with_targets), statistics.median(full)
    windows = {"model_only": model_only, "model_targets": with_targets, "full": full}
    return {"backbone": backbone, "model_only_img_s": m, "model_targets_img_s": t, "full_img_s": f,
            "full_over_model_only": f / m, "windows": windows, "nonfinite_skipped": skipped,
            "amp_used": amp_used, "channels_last_used": channels_last_used}


def run_train_benchmark(s: TrainBenchmarkSettings) -> dict[str, Any]:
    """Generate (or reuse) the data, then measure every trunk; a JSON-able dict."""
    from ..runtime import resolve_device

    device = resolve_device(s.device)
    data_root = benchmark_dataset(s.data_dir, s.num_images, s.seed)
    results: dict[str, Any] = {"settings": asdict(s), "hardware": hardware_summary(device),
                               "device": str(device), "data": str(data_root), "backbones": []}
    for backbone in s.backbones:
        logger.info("benchmarking %s", backbone)
        results["backbones"].append(bench_backbone(s, backbone, data_root))
    # What the engine used (bf16 falls back to float32 on CPUs without it; channels_last is CUDA-only).
    first = results["backbones"][0] if results["backbones"] else {}
    results["amp_used"] = first.get("amp_used", s.amp)
    results["channels_last_used"] = first.get("channels_last_used", s.channels_last)
    return results


def format_table(r: dict[str, Any]) -> str:
    """The results as a small text table."""
    s = r["settings"]
    lines = [
        f"hardware: {r['hardware']}",
        f"device {r['device']}, input {s['input_size']}, batch {s['batch_size']}, amp {r['amp_used']}, "
        f"channels_last {r['channels_last_used']}, compile {s['compile']}, head width {s['head_width']}, "
        f"{s['workers']} loader workers",
        f"data: {s['num_images']} PNG patches {BENCH_IMAGE_SIZE}x{BENCH_IMAGE_SIZE}, {BENCH_OBJECTS} objects "
        f"each ({r['data']})",
        f"images/s, median of {s['windows']} windows of {s['steps']} steps after {s['warmup']} warm-up steps",
        "",
    ]
    width = max([14] + [len(b["backbone"]) + 2 for b in r["backbones"]])
    lines.append(f"{'backbone':<{width}}{'model-only':>12}{'model+targets':>15}{'full loop':>11}"
                 f"{'full/model-only':>17}")
    for b in r["backbones"]:
        lines.append(f"{b['backbone']:<{width}}{b['model_only_img_s']:>12.1f}{b['model_targets_img_s']:>15.1f}"
                     f"{b['full_img_s']:>11.1f}{b['full_over_model_only']:>17.2f}")
    lines += [
        "",
        "model-only: batch on the device, targets pre-encoded; model+targets: batch on the device,",
        "targets encoded on the device each step; full loop: PNG files -> loader workers -> device ->",
        "targets -> step (the real training loop).",
    ]
    return "\n".join(lines)
