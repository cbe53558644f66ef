"""YOLO-OBB, CVAT and LabelMe inputs on an image whose label is known by construction: a filled
rotated rectangle drawn on a blank image from hand-computed corners. The converted DOTA polygon must
lie on the drawn pixels, so a wrong rotation sense, a swapped axis or a wrong normalisation fails.

Fixtures follow each format's documentation:
* YOLO-OBB: https://docs.ultralytics.com/datasets/obb/ ("class_index x1 y1 x2 y2 x3 y3 x4 y4",
  normalised to [0, 1]; data YAML with path/train/val/names);
* CVAT for images 1.1: https://docs.cvat.ai/docs/other/xml_format/ (``<image name width height>``,
  ``<box xtl ytl xbr ybr rotation>``, ``<polygon points="x,y;...">``);
* LabelMe: https://github.com/wkentaro/labelme (labelme/label_file.py: ``shapes`` with ``label``,
  ``points``, ``shape_type``; ``imagePath``, ``imageWidth``, ``imageHeight``).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from DOTA_devkit.formats.dataset import convert_dataset
from DOTA_devkit.labels import read_dota_label

W, H = 200, 120
COLOUR = (0, 200, 255)  # BGR
# A box 80 x 30 centred at (100, 60), turned 30 degrees clockwise on screen (y down), corners by
# hand: TL = c + R(30 deg) (-40, -15) = (100 - 34.641 + 7.5, 60 - 20 - 12.990), and so on.
CORNERS = np.array([[72.859, 27.010], [142.141, 67.010], [127.141, 92.990], [57.859, 52.990]])
# The same box turned the other way (-30 deg): what a reader with the wrong sense would produce.
MIRRORED = np.array([[57.859, 67.010], [127.141, 27.010], [142.141, 52.990], [72.859, 92.990]])


def _draw(path: Path) -> None:
    img = np.zeros((H, W, 3), np.uint8)
    cv2.fillPoly(img, [np.round(CORNERS * 16).astype(np.int32)], COLOUR, lineType=cv2.LINE_8, shift=4)
    cv2.imwrite(str(path), img)


def _on_drawn_box(image: np.ndarray, polygon: np.ndarray) -> bool:
    """Points 85% of the way from the centre to each corner are the drawn colour, points 125% of the
    way are background."""
    p = np.asarray(polygon, dtype=np.float64).reshape(4, 2)
    c = p.mean(axis=0)

    def colour_at(q: np.ndarray) -> tuple[int, ...]:
        return tuple(int(v) for v in image[int(round(q[1])), int(round(q[0]))])

    inside = all(colour_at(c + 0.85 * (q - c)) == COLOUR for q in p)
    outside = all(colour_at(c + 1.25 * (q - c)) == (0, 0, 0) for q in p)
    return inside and outside


def test_the_pixel_check_tells_the_two_senses_apart(tmp_path: Path) -> None:
    _draw(tmp_path / "a.png")
    img = cv2.imread(str(tmp_path / "a.png"))
    assert _on_drawn_box(img, CORNERS)
    assert not _on_drawn_box(img, MIRRORED)


def _check_converted(dota: Path, expected_objects: int) -> None:
    img = cv2.imread(str(dota / "images" / "a.png"))
    labels = read_dota_label(dota / "labelTxt" / "a.txt")
    assert len(labels.objects) == expected_objects
    for obj in labels.objects:
        assert _on_drawn_box(img, obj.polygon)
        # Same corner set as drawn (order per format), within the 3-decimal writing precision.
        got = obj.polygon.reshape(4, 2)
        assert min(np.abs(np.roll(got, k, axis=0) - CORNERS).max() for k in range(4)) < 2e-3


def test_yolo_obb_constructed(tmp_path: Path) -> None:
    src = tmp_path / "yolo"
    (src / "images" / "train").mkdir(parents=True)
    (src / "labels" / "train").mkdir(parents=True)
    _draw(src / "images" / "train" / "a.png")
    norm = CORNERS / [W, H]
    (src / "labels" / "train" / "a.txt").write_text(
        "1 " + " ".join(f"{v:.6f}" for v in norm.reshape(-1)) + "\n"
    )
    (src / "data.yaml").write_text(
        f"path: {src}\ntrain: images/train\nval: images/train\nnames: [boat, car]\n"
    )
    report = convert_dataset(src, tmp_path / "dota", "yolo-obb", progress=False)
    assert report.objects_written == 1 and report.classes == ("boat", "car") and report.balanced()
    _check_converted(tmp_path / "dota", 1)
    assert read_dota_label(tmp_path / "dota/labelTxt/a.txt").class_names() == ["car"]
    assert (tmp_path / "dota/train.txt").read_text().split() == ["a"]


@pytest.mark.parametrize("shape", ["box", "polygon"])
def test_cvat_constructed(tmp_path: Path, shape: str) -> None:
    src = tmp_path / "cvat"
    (src / "images").mkdir(parents=True)
    _draw(src / "images" / "a.png")
    if shape == "box":
        # The unrotated box: centre (100, 60), 80 x 30, turned by rotation="30" (degrees).
        element = (
            '<box label="car" occluded="0" source="manual" xtl="60" ytl="45" xbr="140" ybr="75" '
            'rotation="30.00" z_order="0"></box>'
        )
    else:
        pts = ";".join(f"{x:.3f},{y:.3f}" for x, y in CORNERS)
        element = f'<polygon label="car" occluded="0" source="manual" points="{pts}" z_order="0"></polygon>'
    (src / "annotations.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version><meta><task>'
        "<labels><label><name>car</name></label></labels></task></meta>"
        f'<image id="0" name="a.png" width="{W}" height="{H}">{element}</image></annotations>'
    )
    report = convert_dataset(src, tmp_path / "dota", "cvat", progress=False)
    assert report.objects_written == 1 and report.balanced() and not report.notes
    _check_converted(tmp_path / "dota", 1)


def test_labelme_constructed(tmp_path: Path) -> None:
    src = tmp_path / "lm"
    src.mkdir()
    _draw(src / "a.png")
    doc = {
        "version": "5.4.1",
        "flags": {},
        "imagePath": "a.png",
        "imageData": None,
        "imageHeight": H,
        "imageWidth": W,
        "shapes": [
            {
                "label": "car",
                "points": CORNERS.tolist(),
                "group_id": None,
                "description": "",
                "shape_type": "polygon",
                "flags": {},
            }
        ],
    }
    (src / "a.json").write_text(json.dumps(doc))
    report = convert_dataset(src, tmp_path / "dota", "labelme", progress=False)
    assert report.objects_written == 1 and report.balanced() and not report.notes
    _check_converted(tmp_path / "dota", 1)
