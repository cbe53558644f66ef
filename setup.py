"""Install bbavectors (torch detector) and DOTA_devkit (numpy/shapely DOTA tools)."""

from setuptools import find_packages, setup

setup(
    name="bbavectors",
    version="0.1.0",
    description="Oriented-box detector for aerial images (BBAVectors) with a DOTA toolkit",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["bbavectors", "bbavectors.*", "DOTA_devkit", "DOTA_devkit.*"]),
    package_data={"bbavectors": ["py.typed"], "DOTA_devkit": ["py.typed"]},
    install_requires=[
        # torch 2.14.1 / torchvision 0.29.1 are what the tests run on. The lower bounds are for
        # torch.load(weights_only=True) and torchvision's get_model / list_models. Rotated IoU and
        # NMS are our own (bbavectors.geometry), so torchvision's rotated box_iou (0.27+) is not needed.
        "torch>=2.4,<2.15",
        "torchvision>=0.19,<0.30",
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "shapely>=2.0",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "tensorboard>=2.12",
        "defusedxml>=0.7",
    ],
    extras_require={
        "dev": [
            "pytest>=7",
            "ruff>=0.5",
            "mypy>=1.8",
            "types-PyYAML",
            "types-tqdm",
            "onnx>=1.15",
            "onnxruntime>=1.17",
            "onnxscript>=0.1",
            "timm>=0.9",
        ],
        "export": ["onnx>=1.15", "onnxruntime>=1.17", "onnxscript>=0.1"],
        # The YOLO-OBB peer of tools/benchmark.py accuracy (docs/benchmarks.md); never a dependency.
        "bench": ["ultralytics>=8.3"],
        "timm": ["timm>=0.9"],
    },
)
