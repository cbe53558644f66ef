"""bbavectors: oriented-box detection for aerial images (BBAVectors, WACV 2021), in PyTorch."""

__version__ = "0.1.0"
