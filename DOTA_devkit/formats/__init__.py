"""Annotation formats users bring, converted to and from the DOTA layout (one module per format).

| module | read (to DOTA) | write (from DOTA) |
| --- | --- | --- |
| :mod:`.rolabelimg` | roLabelImg XML | roLabelImg XML |
| :mod:`.hrsc` | HRSC2016 XML | - |
| :mod:`.dior` | DIOR-R XML | - |
| :mod:`.yolo_obb` | Ultralytics YOLO-OBB txt + data.yaml | YOLO-OBB (:func:`.dataset.dota_to_yolo_obb`) |
| :mod:`.labelme` | LabelMe JSON | - |
| :mod:`.cvat` | CVAT for images 1.1 XML | CVAT for images 1.1 XML |

:mod:`.xml_io` is the one safe XML reader (defusedxml) they share; :mod:`.common` the image checks
and the counts; :mod:`.dataset` drives a folder conversion (``tools/convert_dataset.py``);
:mod:`.check` reports on a data set in any of these formats (``--check``). No torch.
"""
