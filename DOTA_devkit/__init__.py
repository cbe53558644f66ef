"""DOTA_devkit: the DOTA format and its tools (labels, geometry, split, merge, Task1 evaluation).

Usable without torch: numpy, shapely and OpenCV only. Modules: ``labels`` (labelTxt), ``classes``,
``image_io`` (reading and listing images), ``split`` (cut scenes into patches), ``image_sets``
(train / val / test split files), ``merge`` (patch results back to scenes), ``task1`` (result
files), ``eval`` (Task1 evaluation), ``polygon_clip``, ``geometry`` and the format converters
(``rolabelimg``, ``hrsc``, ``dior``).
"""

__version__ = "0.1.0"
