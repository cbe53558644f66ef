"""The one-line form of a user-caused error, for the command-line tools (exit code 2, no traceback)."""

from __future__ import annotations

__all__ = ["one_line"]


def one_line(error: BaseException) -> str:
    """The first line of ``error``'s message; an OS error as ``file: reason`` (never torch's advice
    to load with ``weights_only=False``: checkpoint errors are :class:`CheckpointLoadError`, whose
    messages never carry it)."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
