"""Load a command-line tool (``tools/<name>.py``) as a module, so tests call its ``main(argv)``
in-process (fast, and exceptions show) instead of starting a Python subprocess."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_tool(name: str) -> ModuleType:
    """A fresh module object for ``tools/<name>.py`` (not registered in ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None, f"tools/{name}.py not found"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
