"""Atomic, durable file writes: a reader sees the old file or the whole new one, never a part.

Every writer in the project goes through :func:`atomic_path`: the content goes to a temporary file
in the destination's folder (same file system, so the rename is atomic), is flushed and fsynced,
then ``os.replace`` puts it in place. A crash or a full disk leaves the old file untouched and no
temporary file behind (the temporary is removed on any error). Temporary names start with a dot
and end in ``.<pid>.tmp``, so a stale one left by a killed process is easy to find and clean.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_bytes", "temporary_name", "fsync_file"]


def temporary_name(path: Path) -> Path:
    """The temporary file used while writing ``path``: ``.<name>.<pid>.tmp`` beside it."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def fsync_file(path: Path) -> None:
    """Flush a closed file's data to the disk (no-op for symbolic links)."""
    if path.is_symlink():
        return
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success fsync it and rename it onto ``path``.

    Example::

        with atomic_path("out/model.onnx") as tmp:
            onnx.save(model, tmp)
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text with LF line endings atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
