"""Everything before training: the config, the process group, the resume checkpoint, the run folder's
name, the data set folder, the class list and the split files. Each is done once, here.

The run folder itself is created by the trainer once every check has passed (datasets read, model
built, checkpoint loaded), so a failed start leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from DOTA_devkit.classes import load_class_list

from ..checkpoint import CheckpointLoadError, load_checkpoint
from ..config import Config, apply_overrides, config_from_dict, load_config, validate_config
from ..runtime import resolve_device
from .distributed import DistInfo, broadcast_object, init_distributed, read_dist_env

__all__ = [
    "QUICK_CONFIG",
    "RunSetupError",
    "build_train_config",
    "resolve_data_root",
    "resolve_classes",
    "resolve_split",
    "check_runs_dir",
    "plan_run_dir",
    "create_run_dir",
    "default_run_name",
    "clean_stale_temporaries",
    "PreparedRun",
    "prepare_run",
    "RESUME_KEYS",
]

logger = logging.getLogger(__name__)

#: The short schedule used when no data set and no config are given (repository checkout).
QUICK_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synthetic_quick.yaml"
#: Named class lists (anything else is a class file).
KNOWN_LISTS = ("dota1.0", "dota1.5", "dota2.0", "hrsc2016", "synthetic")
#: What a checkpoint needs to be resumed (weights-only checkpoints lack them).
RESUME_KEYS = ("optimizer", "scheduler", "epoch", "step")
#: Files the run writes through a temporary ``.<name>.<pid>.tmp`` (or ``<name>.tmp``) sibling.
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "config.yaml")


class RunSetupError(ValueError):
    """A run cannot start (bad folder, split, class list, data): a one-line message for the user."""


def build_train_config(
    config_path: str | Path | None,
    overrides: Sequence[str],
    data_root: str | None = None,
    quick_config: str | Path | None = QUICK_CONFIG,
) -> Config:
    """The one builder of a training config: ``load_config -> apply_overrides -> validate_config``.

    Args:
        config_path: YAML file; None with no ``data_root`` loads ``quick_config`` (the embedded
            short schedule on the synthetic set), None with a data root the defaults.
        overrides: ``section.key=value`` items, applied in order (flags are turned into these).
        data_root: the data set folder (``--data``); None trains on the built-in synthetic set.
    Raises:
        ConfigError: unknown keys or bad values (the message names them).
        FileNotFoundError: a config file that does not exist.
    """
    if config_path is None and data_root is None and quick_config is not None:
        if not Path(quick_config).is_file():
            raise FileNotFoundError(f"the built-in quick schedule {quick_config} is missing: pass --config")
        config_path = quick_config
    cfg = load_config(config_path)
    items = list(overrides)
    if data_root is not None:
        items.append(f"data.root={data_root}")
    cfg = apply_overrides(cfg, items)
    if cfg.data.root is None and cfg.data.classes != "synthetic":
        logger.info("no data set given: training on the built-in synthetic set, so data.classes=synthetic")
        cfg = apply_overrides(cfg, ["data.classes=synthetic"])
    return validate_config(cfg)


def resolve_data_root(cfg: Config) -> Path:
    """``data.root``, or the cached built-in synthetic set (generated on first use) when None."""
    if cfg.data.root is None:
        from ..data.synthetic import ensure_default_dataset

        return ensure_default_dataset()
    root = Path(cfg.data.root)
    if not root.is_dir():
        raise FileNotFoundError(f"data set folder not found: {root} (data.root / --data)")
    return root


def resolve_classes(spec: str, root: Path) -> tuple[str, ...]:
    """The class list of ``data.classes`` (logged with where it came from).

    ``auto``: ``<root>/classes.txt`` when it exists, else dota1.0 (with a warning); a known list
    name; a class file path; or a class file relative to the data root.
    Raises:
        RunSetupError: a class file that does not exist or is empty.
    """
    key = spec.lower()
    if key == "auto":
        own = root / "classes.txt"
        if own.is_file():
            source: str | Path = own
        else:
            logger.warning("no class list given and %s does not exist: using the DOTA 1.0 classes "
                           "(--classes FILE to choose)", own)
            source = "dota1.0"
    elif key in KNOWN_LISTS:
        source = key
    elif (root / spec).is_file():
        source = root / spec
    elif Path(spec).is_file():
        source = Path(spec)
    else:
        raise RunSetupError(f"class list {spec!r} is neither a known list ({', '.join(KNOWN_LISTS)}) nor a "
                            f"file (looked at {Path(spec)} and {root / spec})")
    try:
        classes = load_class_list(source)
    except (OSError, ValueError) as e:
        raise RunSetupError(f"class list {source}: {e}") from None
    if not classes:
        raise RunSetupError(f"class list {source} is empty")
    logger.info("classes (%d) from %s: %s", len(classes), source, ", ".join(classes))
    return classes


def resolve_split(spec: str, root: Path) -> Path:
    """A split file: ``spec`` names ``<root>/<spec>.txt``, or is the path of a ``.txt`` file anywhere
    (relative to the working folder, else to the data root). The file may not exist (callers decide).

    Raises:
        RunSetupError: a path that does not end in ``.txt``.
    """
    path = Path(spec)
    if path.suffix != ".txt" and len(path.parts) == 1:
        return root / f"{spec}.txt"
    if path.suffix != ".txt":
        raise RunSetupError(f"split file {spec} must be a .txt file (one image id per line)")
    if path.is_file() or path.is_absolute():
        return path
    return root / path if (root / path).is_file() else path


def check_runs_dir(runs_root: Path) -> None:
    """``runs_root`` is (or can be created as) a writable folder.

    Raises:
        RunSetupError: a file is in the way, or the folder (or its first existing parent) is read-only.
    """
    probe = runs_root
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise RunSetupError(f"--runs-dir {runs_root}: {probe} is a file, not a folder")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise RunSetupError(f"--runs-dir {runs_root}: {probe} is not writable")


def plan_run_dir(runs_root: str | Path, name: str | None, default_name: str) -> Path:
    """The run folder a new run will use (not created): ``runs_root/<name>``, never an existing one.

    Args:
        name: the user's ``--name`` (an existing folder of that name is an error), or None to use
            ``default_name`` (suffixed ``_2``, ``_3``... when taken).
    Raises:
        FileExistsError: ``name`` is given and exists (use ``--resume`` to continue it).
    """
    root = Path(runs_root)
    check_runs_dir(root)
    if name is not None:
        path = root / name
        if path.exists():
            raise FileExistsError(f"run folder {path} exists: choose another --name, or continue it with "
                                  f"--resume {path / 'last.pt'}")
        return path
    for k in range(1, 10_000):
        path = root / (default_name if k == 1 else f"{default_name}_{k}")
        if not path.exists():
            return path
    raise FileExistsError(f"no free run folder name for {default_name} in {root}")


def create_run_dir(runs_root: str | Path, name: str | None, default_name: str) -> Path:
    """:func:`plan_run_dir`, then create it (a name taken meanwhile by another run is skipped)."""
    for _ in range(100):
        path = plan_run_dir(runs_root, name, default_name)
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            if name is not None:
                raise
    raise FileExistsError(f"no free run folder name for {default_name} in {runs_root}")


def default_run_name(cfg: Config, config_given: bool) -> str:
    """The config's name when a config file was given, else ``<backbone>_<timestamp>``."""
    if config_given and cfg.name and cfg.name != Config().name:
        return cfg.name
    backbone = cfg.model.backbone.replace(":", "-").replace("/", "-")
    return f"{backbone}_{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def clean_stale_temporaries(run_dir: Path) -> list[Path]:
    """Remove the temporary files a killed run left in ``run_dir`` (``.last.pt.<pid>.tmp``...);
    returns them. Only called when resuming, when no other process writes to that folder."""
    stale = [p for name in RUN_FILES for p in run_dir.glob(f".{name}.*.tmp")]
    stale += [p for name in RUN_FILES if (p := run_dir / f"{name}.tmp").exists()]
    for path in stale:
        try:
            path.unlink()
            logger.info("removed %s (left by an interrupted write)", path)
        except OSError as e:
            logger.warning("cannot remove %s: %s", path, e)
    return stale


@dataclass
class PreparedRun:
    """A resolved config, its (planned) run folder and this process's place in the job."""

    cfg: Config
    run_dir: Path
    dist: DistInfo
    device: torch.device
    resume_path: Path | None = None
    resume_state: dict[str, Any] | None = None


def load_resume_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint that can be resumed (:data:`RESUME_KEYS` present), loaded on the CPU.

    Raises:
        CheckpointLoadError: missing, unreadable, foreign, or weights-only.
    """
    ckpt = load_checkpoint(path, map_location="cpu")
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if missing:
        raise CheckpointLoadError(f"{path} cannot be resumed: it lacks {missing} "
                                  "(a weights-only checkpoint?)")
    return ckpt


def prepare_run(
    config_path: str | Path | None,
    overrides: Sequence[str],
    data_root: str | None,
    runs_root: str | Path,
    name: str | None = None,
    resume: str | Path | None = None,
) -> PreparedRun:
    """Everything ``tools/train.py`` does before training: config, process group, run folder name.

    A new run: :func:`build_train_config`, then rank 0 picks the folder (:func:`plan_run_dir`) and
    tells the other ranks. A resumed run: the checkpoint's config (loaded here, once) with
    ``overrides`` (and ``data_root``) applied, in the checkpoint's folder, stale temporaries removed.

    Raises:
        ConfigError, FileNotFoundError, FileExistsError, ValueError (CheckpointLoadError,
        RunSetupError): with a one-line message for the user.
    """
    info = read_dist_env()
    state: dict[str, Any] | None = None
    if resume is not None:
        if config_path is not None:
            raise RunSetupError("--resume takes the run's config from the checkpoint: drop --config "
                                "(change values with flags or --set)")
        state = load_resume_checkpoint(resume)
        items = list(overrides) + ([f"data.root={data_root}"] if data_root is not None else [])
        cfg = validate_config(apply_overrides(config_from_dict(state["config"]), items))
        resumed_dir = Path(resume).resolve().parent
        if name is not None:
            logger.warning("--name %s ignored: a resumed run stays in %s", name, resumed_dir)
        if info.is_main:
            clean_stale_temporaries(resumed_dir)
        run_dir: Path | None = resumed_dir
    else:
        cfg = build_train_config(config_path, overrides, data_root)
        run_dir = plan_run_dir(runs_root, name, default_run_name(cfg, config_path is not None)) \
            if info.is_main else None
    device = resolve_device(cfg.train.device, info.local_rank)
    init_distributed(info, device)
    run_dir = broadcast_object(run_dir)
    assert run_dir is not None
    return PreparedRun(cfg, Path(run_dir), info, device, Path(resume) if resume is not None else None, state)
