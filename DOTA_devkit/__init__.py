"""DOTA_devkit: the DOTA format and its tools (labels, geometry, split, merge, Task1 evaluation).

Usable without torch: numpy, shapely and OpenCV only.
"""

__version__ = "0.1.0"
