"""Class lists: DOTA v1.0 / v1.5 / v2.0, HRSC2016, the synthetic set, or a user file.

Order matters: a class's index in its list is its channel in the ``hm`` head.
"""

from __future__ import annotations

from pathlib import Path

from .atomic import atomic_write_text

__all__ = ["DOTA_V1_0", "DOTA_V1_5", "DOTA_V2_0", "HRSC2016", "DIOR_R", "SYNTHETIC", "KNOWN_CLASS_LISTS",
           "load_class_list", "read_class_file", "write_class_file"]

DOTA_V1_0: tuple[str, ...] = (
    "plane", "baseball-diamond", "bridge", "ground-track-field", "small-vehicle", "large-vehicle",
    "ship", "tennis-court", "basketball-court", "storage-tank", "soccer-ball-field", "roundabout",
    "harbor", "swimming-pool", "helicopter",
)
DOTA_V1_5: tuple[str, ...] = DOTA_V1_0 + ("container-crane",)
DOTA_V2_0: tuple[str, ...] = DOTA_V1_5 + ("airport", "helipad")
HRSC2016: tuple[str, ...] = ("ship",)
#: DIOR-R's 20 classes, in its paper's order, spelled as its annotation files spell them.
DIOR_R: tuple[str, ...] = (
    "airplane", "airport", "baseballfield", "basketballcourt", "bridge", "chimney", "dam",
    "Expressway-Service-area", "Expressway-toll-station", "golffield", "groundtrackfield", "harbor",
    "overpass", "ship", "stadium", "storagetank", "tenniscourt", "trainstation", "vehicle", "windmill",
)
#: Classes drawn by :mod:`bbavectors.data.synthetic`.
SYNTHETIC: tuple[str, ...] = ("plane", "ship", "small-vehicle", "large-vehicle", "storage-tank")

KNOWN_CLASS_LISTS: dict[str, tuple[str, ...]] = {
    "dota1.0": DOTA_V1_0,
    "dota1.5": DOTA_V1_5,
    "dota2.0": DOTA_V2_0,
    "hrsc2016": HRSC2016,
    "dior-r": DIOR_R,
    "synthetic": SYNTHETIC,
}


def read_class_file(path: str | Path) -> tuple[str, ...]:
    """One class name per line; blank lines and ``#`` comments ignored; duplicates rejected."""
    path = Path(path)
    names: list[str] = []
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            name = line.split("#", 1)[0].strip()
            if not name:
                continue
            if any(c.isspace() for c in name):
                raise ValueError(f"{path}:{lineno}: class name {name!r} contains whitespace")
            if name in names:
                raise ValueError(f"{path}:{lineno}: duplicate class name {name!r}")
            names.append(name)
    if not names:
        raise ValueError(f"{path}: class list file is empty")
    return tuple(names)


def write_class_file(path: str | Path, names: tuple[str, ...] | list[str]) -> None:
    """Write one class per line, atomically."""
    path = Path(path)
    atomic_write_text(path, "".join(f"{n}\n" for n in names))


def load_class_list(spec: str | Path) -> tuple[str, ...]:
    """A known list name (``dota1.0``, ``dota1.5``, ``dota2.0``, ``hrsc2016``, ``synthetic``)
    or the path of a class file."""
    key = str(spec).lower()
    if key in KNOWN_CLASS_LISTS:
        return KNOWN_CLASS_LISTS[key]
    if Path(spec).is_file():
        return read_class_file(spec)
    raise ValueError(
        f"unknown class list {spec!r}: use one of {sorted(KNOWN_CLASS_LISTS)} or a path to a text file "
        "with one class name per line"
    )
