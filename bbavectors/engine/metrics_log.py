"""Run metrics: a JSON-lines file plus TensorBoard scalars and images, written by rank 0 only.

``metrics.jsonl`` holds one JSON object per line; every line has ``kind`` (``train`` for a logged
step, ``epoch`` for an epoch summary, ``val`` for a validation), ``step`` (optimiser steps done),
``epoch`` and ``time`` (seconds since the epoch), then the values, e.g.::

    {"kind": "train", "step": 120, "epoch": 3, "time": 1718000000.0, "loss": 1.92, "hm": 1.1, "lr": 0.0005}
    {"kind": "val", "step": 240, "epoch": 5, "time": ..., "map07": 0.61, "map_area": 0.63, "ap07/plane": 0.8}

Non-finite values are written as ``null`` (strict JSON). Each line is written by one ``write`` call
and flushed, so a killed run leaves whole lines. When a run resumes from step ``s``, the lines past
``s`` (written after that checkpoint by the interrupted run) are dropped from the file (rewritten
atomically) and TensorBoard purges its events past ``s``, so curves never fold back.

TensorBoard event files go to ``<run>/tb``: ``tensorboard --logdir runs``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["MetricsLogger", "read_metrics", "METRICS_FILE", "TENSORBOARD_DIR"]

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tb"


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` (a torn last line, from a killed run, is skipped)."""
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("%s:%d: unreadable metrics line skipped", path, number)
    return records


class MetricsLogger:
    """JSON-lines + TensorBoard writer; every method is a no-op when ``enabled`` is False.

    Args:
        run_dir: the run folder (``metrics.jsonl`` and ``tb/`` inside).
        enabled: False on ranks other than 0.
        resume_step: resuming from this step: drop later records (module docstring).
        tensorboard: also write TensorBoard events.
    """

    def __init__(
        self,
        run_dir: str | Path,
        enabled: bool = True,
        resume_step: int | None = None,
        tensorboard: bool = True,
    ) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / METRICS_FILE
        self._writer: Any = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.is_file():
            self._truncate_after(resume_step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # late: tensorboard is slow to import

            self._writer = SummaryWriter(str(Path(run_dir) / TENSORBOARD_DIR), purge_step=resume_step)

    def _truncate_after(self, step: int) -> None:
        kept = [r for r in read_metrics(self.path) if int(r.get("step", 0)) <= step]
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def log(self, kind: str, step: int, epoch: int, values: dict[str, Any]) -> None:
        """One JSON line, and one TensorBoard scalar ``<kind>/<name>`` per numeric value."""
        if not self.enabled:
            return
        record = {"kind": kind, "step": int(step), "epoch": int(epoch), "time": round(time.time(), 3)}
        record.update({k: _plain(v) for k, v in values.items()})
        line = json.dumps(record, allow_nan=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
        if self._writer is not None:
            for name, value in record.items():
                if name in ("kind", "step", "epoch", "time") or isinstance(value, bool):
                    continue
                if isinstance(value, (int, float)):
                    self._writer.add_scalar(f"{kind}/{name}", value, step)

    def log_image(self, tag: str, image: NDArray[np.uint8], step: int) -> None:
        """A ``(H, W, 3)`` uint8 RGB picture in TensorBoard."""
        if self._writer is not None:
            self._writer.add_image(tag, np.ascontiguousarray(image), step, dataformats="HWC")

    def log_text(self, tag: str, text: str, step: int) -> None:
        """Text (e.g. the per-class AP table) in TensorBoard, as preformatted markdown."""
        if self._writer is not None:
            self._writer.add_text(tag, "    " + text.replace("\n", "\n    "), step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
