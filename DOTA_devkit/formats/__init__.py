"""Annotation formats users bring, converted to and from the DOTA layout (one module per format).

| module | read (to DOTA) | write (from DOTA) |
| --- | --- | --- |
| :mod:`.rolabelimg` | roLabelImg XML | roLabelImg XML |
| :mod:`.hrsc` | HRSC2016 XML | - |
| :mod:`.dior` | DIOR-R XML | - |
| :mod:`.yolo_obb` | Ultralytics YOLO-OBB txt + data YAML | YOLO-OBB (:func:`.dataset.dota_to_yolo_obb`) |
| :mod:`.labelme` | LabelMe JSON | - |
| :mod:`.cvat` | CVAT for images 1.1 XML | CVAT for images 1.1 XML |

Each module parses its files and reads its own folder layout (``read_*_folder``,
``read_yolo_obb_dataset``, ``read_cvat_export``) into :class:`.common.Sample` s. :mod:`.xml_io` is
the one safe XML reader (defusedxml) they share; :mod:`.common` holds the samples, image checks and
counts; :mod:`.dataset` drives a conversion (``tools/convert_dataset.py``); :mod:`.check` reports on
a data set in any of these formats (``--check``). No torch.
"""
