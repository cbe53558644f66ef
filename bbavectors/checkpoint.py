"""Checkpoints: written atomically, loaded with ``weights_only=True``, self-describing.

A checkpoint is a dict of plain types and tensors::

    {"format": "bbavectors-1", "model": state_dict, "config": config_to_dict(cfg),
     "classes": [...], "epoch": int, "step": int, ...optimizer / scheduler / scaler / ema state}

so that :func:`model_from_checkpoint` rebuilds the network from the checkpoint alone and it moves
freely between CPU and GPU (``map_location``).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import Config, config_from_dict, config_to_dict
from .runtime import unwrap_model

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "model_from_checkpoint",
    "CheckpointLoadError",
    "CheckpointNotFoundError",
    "CheckpointWriteError",
    "write_torch_file",
    "load_untrusted",
    "CHECKPOINT_FORMAT",
]

CHECKPOINT_FORMAT = "bbavectors-1"


class CheckpointLoadError(ValueError):
    """A file given as a checkpoint is missing or is not a loadable bbavectors checkpoint.

    The message is one line naming the file; it never suggests ``weights_only=False`` (that would
    run arbitrary code from an untrusted file).
    """


class CheckpointNotFoundError(CheckpointLoadError, FileNotFoundError):
    """The checkpoint path does not name a file."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a read-only folder...): a one-line message
    naming the file; the file that was at the path before, if any, is left as it was."""


def save_checkpoint(
    path: str | Path, model: nn.Module, cfg: Config, classes: list[str] | tuple[str, ...], **state: Any
) -> None:
    """Write ``path`` atomically and durably: a temporary file in the same folder, flushed to disk
    (fsync) before it is renamed over ``path``, so a crash or power loss leaves either the old
    checkpoint or the whole new one, never a renamed file whose data never reached the disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": unwrap_model(model).state_dict(),
        "config": config_to_dict(cfg),
        "classes": list(classes),
        **state,
    }
    write_torch_file(payload, path)


def write_torch_file(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically and durably (see :func:`save_checkpoint`); a failed
    write raises :class:`CheckpointWriteError` and leaves no temporary file and the old ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        # torch.save reports a full disk as a bare RuntimeError from its zip writer that names
        # neither the file nor the cause: say both, with the free space to check it against.
        raise CheckpointWriteError(f"cannot write {path}: {_write_failure(err, path.parent)}; "
                                   "the previous file, if any, is unchanged") from err
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _write_failure(err: BaseException, folder: Path) -> str:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return "the disk is full"
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free on its disk"
    except OSError:
        free = "free space unknown"
    # Imported here: bbavectors.inference imports this module (only failures pay for the import).
    from .inference.errors import one_line

    return f"{one_line(err)} ({free})"


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every OS can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_untrusted(
    path: str | Path, map_location: str | torch.device = "cpu", what: str = "checkpoint"
) -> Any:
    """``torch.load(path, weights_only=True)`` of a file that may be anything (truncated, random
    bytes, another program's pickle): every failure becomes one :class:`CheckpointLoadError` line.

    Unpickling arbitrary bytes can fail with almost any exception type (IndexError, UnicodeDecodeError,
    struct.error, ...), so all of them are caught here, and only here.
    """
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 (see the docstring)
        # torch's own message advises weights_only=False: never pass that on for an untrusted file.
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "weights_only" in str(e):
            reason = "it holds objects other than tensors and plain types (refused for safety)"
        raise CheckpointLoadError(f"{path} is not a usable {what}: {reason}") from e


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict safely (``weights_only=True``).

    Raises:
        CheckpointLoadError: no such file, a truncated / corrupt / foreign file, or a dict without
            the bbavectors format tag. The message names the file in one line.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    ckpt = load_untrusted(path, map_location, what="bbavectors checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointLoadError(
            f"{path} is not a usable bbavectors checkpoint (no format tag {CHECKPOINT_FORMAT!r})")
    return ckpt


def model_from_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, Config, list[str]]:
    """Rebuild the model stored in a checkpoint, in eval mode on ``device``.

    Returns:
        ``(model, config, class names)``.
    """
    from .models.builder import build_model  # late import: the model package is heavy

    ckpt = load_checkpoint(path, map_location="cpu")
    try:
        cfg = config_from_dict(ckpt["config"])
        classes = list(ckpt["classes"])
        # The trunk's ImageNet weights are in the state dict already: never fetch them again.
        cfg.model.pretrained = None
        model = build_model(cfg, num_classes=len(classes))
        model.load_state_dict(ckpt.get("ema") or ckpt["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointLoadError(f"{path} is not a usable bbavectors checkpoint: {reason}") from e
    return model.to(device).eval(), cfg, classes
