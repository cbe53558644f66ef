"""Where and how tensors run: device choice, mixed precision, CPU threads, unwrapping wrappers.

One definition of each, shared by training, validation, inference, export and the benchmarks, so
that "bf16" or "auto" means the same thing in every tool.

AMP modes: ``bf16`` (autocast, no loss scaling), ``fp16`` (autocast + GradScaler when training;
GPUs only in practice) and ``none`` (float32). On a CPU without native bf16 (AVX512-BF16 or AMX)
bf16 autocast is slower than float32, so :func:`resolve_amp` falls back to float32 there.
Inference also takes ``auto`` (:data:`INFERENCE_AMP_MODES`, :func:`resolve_inference_amp`): bf16
where the hardware computes it natively, float32 elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
from typing import Any

import torch
from torch import nn

from .cpu_cores import usable_cores

__all__ = [
    "AMP_MODES",
    "INFERENCE_AMP_MODES",
    "resolve_device",
    "resolve_amp",
    "resolve_inference_amp",
    "cpu_has_bf16",
    "autocast_context",
    "unwrap_model",
    "configure_cpu_threads",
    "cpu_model_name",
    "usable_cores",
]

logger = logging.getLogger(__name__)

AMP_MODES: tuple[str, ...] = ("bf16", "fp16", "none")
#: Inference's modes: :data:`AMP_MODES` and ``auto`` (:func:`resolve_inference_amp`).
INFERENCE_AMP_MODES: tuple[str, ...] = ("auto", *AMP_MODES)


def resolve_device(spec: str | torch.device, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:local_rank`` when CUDA exists, else CPU; ``"cuda"`` gets the local rank.

    Raises:
        ValueError: CUDA asked for but absent, or a GPU index that does not exist.
    """
    if isinstance(spec, torch.device):
        device = spec
    else:
        if spec == "auto":
            spec = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            device = torch.device(spec)
        except RuntimeError as exc:
            raise ValueError(f"unknown device {spec!r} (use auto, cpu, cuda or cuda:N)") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(spec)!r} requested but CUDA is not available (use --device cpu)")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {device} does not exist ({torch.cuda.device_count()} GPU(s) visible)")
    return device


def cpu_has_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX tiles)."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((probe is not None and probe()) or (amx is not None and amx()))


def resolve_amp(mode: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None, use a GradScaler)`` for an AMP mode on ``device``.

    Raises:
        ValueError: unknown mode, or bf16 on a GPU without it.
    """
    mode = mode.lower()
    if mode not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {mode!r}")
    if mode == "none":
        return None, False
    if mode == "bf16":
        if device.type == "cpu" and not cpu_has_bf16():
            logger.info("this CPU has no native bf16 (AVX512-BF16 / AMX): running in float32")
            return None, False
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"{torch.cuda.get_device_name(device)} does not support bf16: "
                             "use --amp fp16 or none")
        return torch.bfloat16, False
    return torch.float16, True


def resolve_inference_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: float32) for inference in ``mode`` on ``device``.

    ``auto`` is bf16 on a CPU with native bf16 (AVX512-BF16 or AMX) and on a GPU that supports it,
    float32 elsewhere. Measured on SSDD's held-out split (2-core AMD EPYC with AVX512-BF16,
    docs/inference.md "CPU defaults"): AP07 within 1e-3 of float32, 1.5x faster. ``bf16`` / ``fp16`` /
    ``none`` as in :func:`resolve_amp` (bf16 on a CPU without it falls back to float32).

    Raises:
        ValueError: unknown mode, or bf16 asked for on a GPU without it.
    """
    mode = mode.lower()
    if mode == "auto":
        native = cpu_has_bf16() if device.type == "cpu" else (
            device.type == "cuda" and torch.cuda.is_bf16_supported())
        return torch.bfloat16 if native else None
    if mode not in AMP_MODES:
        raise ValueError(f"amp must be one of {INFERENCE_AMP_MODES}, got {mode!r}")
    return resolve_amp(mode, device)[0]


def autocast_context(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` on ``device`` with ``dtype``, or a null context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel and ``torch.compile`` wrappers."""
    inner = getattr(model, "module", model)
    return getattr(inner, "_orig_mod", inner)  # type: ignore[no-any-return]


def configure_cpu_threads(device: torch.device, threads: int | None = None) -> int:
    """Set torch's intra-op threads for CPU work; returns the number set.

    Default: the cores this process may use, shared evenly between the processes of this node
    (two CPU ranks on 2 cores get one thread each instead of fighting over two). Loader workers
    are single-threaded (the loader sets that), so they only take cores while they decode.
    """
    if threads is None:
        if device.type != "cpu":
            return torch.get_num_threads()
        cores = usable_cores()
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
        threads = max(1, cores // max(1, local_world))
    torch.set_num_threads(threads)
    return threads


def cpu_model_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), for benchmark reports; the architecture elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
