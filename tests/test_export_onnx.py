"""ONNX export with the decoder inside, the torch-free runner and the export check.

One tiny model (resnet18, head width 16, 5 classes, input 256) is exported once per module by the
command-line tool itself (export + onnxruntime check), and most tests reuse that file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tool_loader import load_tool

from bbavectors.checkpoint import model_from_checkpoint, save_checkpoint
from bbavectors.config import Config, DecodeConfig
from bbavectors.data.image_io import write_image
from bbavectors.data.letterbox import letterbox_image, normalize_images
from bbavectors.decode import decode_topk
from bbavectors.export.check import (
    compare_detections,
    compare_graph_outputs,
    compare_runner,
)
from bbavectors.export.onnx_export import (
    ExportWrapper,
    export_onnx,
    graph_rotated_nms,
    quad_iou_static,
)
from bbavectors.export.onnx_runner import OnnxDetector, letterbox_numpy, read_onnx_metadata
from bbavectors.inference.predictor import Predictor
from bbavectors.models.builder import build_model
from DOTA_devkit.classes import SYNTHETIC
from DOTA_devkit.geometry import obb_to_poly, poly_iou, rotated_nms_per_class

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BBAV_SHARED_DATA", REPO.parent / "shared" / "data"))  # as conftest.py
INPUT = 256
TOP_K = 50
REAL_IMAGE = SHARED_DATA / "dota_demo" / "images" / "P1478__1__853___962.png"




def tiny_config() -> Config:
    cfg = Config()
    cfg.model.backbone = "resnet18"
    cfg.model.head_width = 16
    cfg.data.classes = "synthetic"
    cfg.data.input_size = INPUT
    cfg.data.mean = (0.40, 0.45, 0.50)  # not ImageNet's: the metadata must carry the config's values
    cfg.data.std = (0.20, 0.25, 0.30)
    cfg.decode = DecodeConfig(top_k=TOP_K, score_thresh=0.3, cls_theta_thresh=0.5, nms_thresh=0.1)
    return cfg


def peaky_model(seed: int = 0) -> torch.nn.Module:
    """Random weights, but a heatmap with a wide logit spread: clear peaks, few near-ties."""
    torch.manual_seed(seed)
    model = build_model(tiny_config(), len(SYNTHETIC)).eval()
    with torch.no_grad():
        model.heads.hm[-1].weight.mul_(30.0)
    return model


class TinyDetector(torch.nn.Module):
    """One stride-4 convolution and the four 1x1 heads of CTRBOX: the smallest graph that feeds the
    exported decoder and NMS (what the NMS and exporter-choice tests test); exports in seconds where
    a resnet18 takes a minute. Peaky heatmap; with ``fixed_box`` every peak gets the same tilted
    ~40 px square, so that neighbouring boxes overlap and the NMS has work."""

    def __init__(self, seed: int, num_classes: int = len(SYNTHETIC), fixed_box: bool = False) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.num_classes, self.down_ratio, self.size_divisor = num_classes, 4, 32
        self.stem = torch.nn.Conv2d(3, 8, 4, stride=4)
        self.hm = torch.nn.Conv2d(8, num_classes, 1)
        self.wh = torch.nn.Conv2d(8, 10, 1)
        self.reg = torch.nn.Conv2d(8, 2, 1)
        self.cls_theta = torch.nn.Conv2d(8, 1, 1)
        with torch.no_grad():
            self.hm.weight.mul_(4.0)  # logits of a few units: no float32 sigmoid saturates to a tie at 1.0
            if fixed_box:
                self.wh.weight.zero_()
                self.wh.bias.copy_(torch.tensor([1.0, -5.0, 5.0, 1.0, -1.0, 5.0, -5.0, -1.0, 12.0, 12.0]))
                self.cls_theta.weight.zero_()
                self.cls_theta.bias.fill_(8.0)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = torch.relu(self.stem(x))
        return {"hm": self.hm(f), "wh": self.wh(f), "reg": torch.sigmoid(self.reg(f)),
                "cls_theta": self.cls_theta(f)}


def random_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[: h // 2, :, 0] = 255  # an asymmetric colour layout: channel order matters
    return img


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, peaky_model(), tiny_config(), list(SYNTHETIC), epoch=1)
    return path


@pytest.fixture(scope="module")
def exported(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Export through the command-line tool, with its check (random input + a real image)."""
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    argv = ["--checkpoint", str(checkpoint), "--out", str(out), "--input-size", str(INPUT),
            "--top-k", str(TOP_K)]
    if REAL_IMAGE.is_file():
        argv += ["--check", str(REAL_IMAGE)]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        rc = load_tool("export_onnx").main(argv)
    text = buffer.getvalue()
    assert rc == 0, text
    return out, text


@pytest.fixture(scope="module")
def model(checkpoint: Path) -> torch.nn.Module:
    return model_from_checkpoint(checkpoint, "cpu")[0]


# ------------------------------------------------------------------------------------ regressions
def test_regression_fork_onnx_export_used_private_torch_api() -> None:
    """The fork's export called a private torch API and crashed; ours goes through torch.onnx.export."""
    sources = [*sorted((REPO / "bbavectors" / "export").glob("*.py")), REPO / "tools" / "export_onnx.py"]
    private = re.compile(r"torch\.onnx\._|torch\._C|torch\.onnx\.utils|torch\.jit\._"
                         r"|from torch\.onnx import _|from torch import _C|(?<![\w.])_export\(")
    for path in sources:
        text = path.read_text(encoding="utf-8")
        assert not private.search(text), f"{path.name} uses a private torch API: {private.search(text)}"
    assert "torch.onnx.export(" in (REPO / "bbavectors" / "export" / "onnx_export.py").read_text()


def test_regression_fork_tensorrt_fed_rgb_to_a_bgr_model(exported: tuple[Path, str]) -> None:
    """The fork's TensorRT code fed RGB to a BGR model: our graph's colour order is written in the file,
    and the runner turns BGR arrays (cv2.imread) into the RGB the model was trained on."""
    path, _ = exported
    det = OnnxDetector(path, providers=["CPUExecutionProvider"])
    assert det.info.color_order == "RGB"
    rgb = random_rgb(100, 140)
    batch_rgb, _ = det.preprocess([rgb])
    batch_bgr, _ = det.preprocess([np.ascontiguousarray(rgb[:, :, ::-1])], bgr=True)
    np.testing.assert_array_equal(batch_rgb, batch_bgr)
    canvas, _ = letterbox_image(rgb, INPUT)
    np.testing.assert_array_equal(batch_rgb[0, 0], canvas[:, :, 0])  # channel 0 is red
    a = det.predict(rgb)
    b = det.predict(np.ascontiguousarray(rgb[:, :, ::-1]), bgr=True)
    np.testing.assert_array_equal(a["polygons"], b["polygons"])


# ------------------------------------------------------------------------------ export + metadata
def test_tool_exports_and_checks_against_pytorch(exported: tuple[Path, str]) -> None:
    path, text = exported
    assert path.is_file()
    assert "check passed" in text
    lines = [ln for ln in text.splitlines() if "detections matched" in ln]
    assert lines and all("unmatched 0" in ln for ln in lines), text
    if REAL_IMAGE.is_file():
        assert any("runner vs PyTorch" in ln for ln in lines)
    box = [float(x) for x in re.findall(r"max \|box diff\| ([0-9.e+-]+)", text)]
    score = [float(x) for x in re.findall(r"max \|score diff\| ([0-9.e+-]+)", text)]
    assert box and max(box) < 0.05 and max(score) < 1e-4
    assert sum(int(n) for n in re.findall(r"(\d+) detections matched", text)) >= TOP_K


def test_metadata_and_opset(exported: tuple[Path, str]) -> None:
    import onnx

    path, _ = exported
    info = read_onnx_metadata(path)
    cfg = tiny_config()
    assert info.input_size == INPUT and info.top_k == TOP_K
    assert info.classes == SYNTHETIC
    assert info.mean == pytest.approx(cfg.data.mean) and info.std == pytest.approx(cfg.data.std)
    assert info.score_thresh == pytest.approx(0.3) and info.nms_thresh == pytest.approx(0.1)
    assert (info.input_dtype, info.normalize_inside, info.nms_in_graph) == ("uint8", True, False)
    assert (info.exporter, info.dynamic) == ("dynamo", "batch,height,width")
    from bbavectors.export import onnx_export, onnx_runner

    assert onnx_runner.ONNX_FORMAT == onnx_export.ONNX_FORMAT  # the runner's torch-free copy
    proto = onnx.load(str(path))
    assert info.opset == 17
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert [o.name for o in proto.graph.output] == ["polygons", "scores", "classes"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["bbavectors.config"])["model"]["backbone"] == "resnet18"
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert all(d.dim_param for d in dims[:1]) and all(d.dim_param for d in dims[2:])  # symbolic


@pytest.mark.parametrize("shape", [(1, 3, INPUT, INPUT), (3, 3, INPUT, INPUT)])
def test_dynamic_batch_same_file(exported: tuple[Path, str], model: torch.nn.Module,
                                 shape: tuple[int, int, int, int]) -> None:
    path, _ = exported
    info = read_onnx_metadata(path)
    wrapper = ExportWrapper(model, TOP_K, 0.5, info.mean, info.std)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    check = compare_graph_outputs(wrapper, path, images, "batch")
    assert check.ok(box_tol=1e-2, score_tol=1e-5), check.notes
    assert check.num_matched >= shape[0] * TOP_K - 2


@pytest.mark.parametrize("hw", [(160, 224), (200, 296), (97, 161)])
def test_dynamic_height_width_any_size(exported: tuple[Path, str], model: torch.nn.Module,
                                       hw: tuple[int, int]) -> None:
    """Height/width are dynamic, including sizes that are not multiples of 32 (padded in the graph)."""
    path, _ = exported
    info = read_onnx_metadata(path)
    wrapper = ExportWrapper(model, TOP_K, 0.5, info.mean, info.std)
    images = torch.randint(0, 256, (2, 3, *hw), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    check = compare_graph_outputs(wrapper, path, images, f"{hw}")
    assert check.ok(box_tol=1e-2, score_tol=1e-5), check.notes


def test_wrapper_equals_model_plus_decode_topk() -> None:
    """The wrapper's own 32-padding + crop + normalisation equal CTRBOX's on an odd size."""
    model = peaky_model(3)
    cfg = tiny_config()
    gen = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (2, 3, 90, 150), dtype=torch.uint8, generator=gen)
    wrapper = ExportWrapper(model, 20, 0.5, cfg.data.mean, cfg.data.std).eval()
    with torch.no_grad():
        got = wrapper(images)
        want = decode_topk(model(normalize_images(images, cfg.data.mean, cfg.data.std)), 20, 0.5)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.to(w.dtype), w, rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------------------------------- runner
def test_runner_matches_pytorch_on_real_image(exported: tuple[Path, str], model: torch.nn.Module,
                                              shared_data: Path) -> None:
    from bbavectors.data.image_io import read_image

    path, _ = exported
    image = read_image(shared_data / "dota_demo" / "images" / "P1478__1__853___962.png")
    det = OnnxDetector(path, providers=["CPUExecutionProvider"])
    result = det.predict(image)
    assert len(result["scores"]) > 0
    assert result["polygons"].shape == (len(result["scores"]), 8)
    # Original coordinates: a 1024 px image seen at 256 px gives corners far beyond 256.
    assert result["polygons"].max() > INPUT * 1.5
    assert (np.diff(result["scores"]) <= 0).all() and (result["scores"] > 0.3).all()
    check = compare_runner(model, det, image, "P1478")
    assert check.unmatched == 0 and check.num_matched == len(result["scores"]), check.notes
    assert check.max_box_diff < 0.05 and check.max_score_diff < 1e-4


def test_runner_on_synthetic_non_square_image(exported: tuple[Path, str], model: torch.nn.Module) -> None:
    path, _ = exported
    det = OnnxDetector(path, providers=["CPUExecutionProvider"], score_thresh=0.2)
    image = random_rgb(300, 500, seed=5)
    check = compare_runner(model, det, image, "synthetic")
    assert check.unmatched == 0 and check.num_matched > 0, check.notes
    assert check.max_box_diff < 0.05
    batch = det.predict_batch([image, image[:120, :77]])
    assert len(batch) == 2
    np.testing.assert_allclose(batch[0]["polygons"], det.predict(image)["polygons"], atol=1e-4)


def test_runner_does_not_import_torch(exported: tuple[Path, str]) -> None:
    path, _ = exported
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any 'import torch' now fails\n"
        "import numpy as np\n"
        "from bbavectors.export import OnnxDetector\n"
        f"det = OnnxDetector({str(path)!r}, providers=['CPUExecutionProvider'])\n"
        "out = det.predict(np.full((64, 80, 3), 128, np.uint8))\n"
        "assert set(out) == {'polygons', 'scores', 'classes'}\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-2000:]


@pytest.mark.parametrize("hw", [(100, 140), (600, 300), (256, 256), (31, 700)])
def test_runner_letterbox_equals_training_letterbox(hw: tuple[int, int]) -> None:
    image = random_rgb(*hw, seed=hw[0])
    canvas, scale = letterbox_numpy(image, INPUT)
    want, params = letterbox_image(image, INPUT)
    np.testing.assert_array_equal(canvas, want)
    assert scale == params.scale and params.pad_x == 0 and params.pad_y == 0


def test_runner_bad_inputs(exported: tuple[Path, str], tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    path, _ = exported
    det = OnnxDetector(path, providers=["CPUExecutionProvider"])
    with pytest.raises(TypeError, match="uint8"):
        det.predict(np.zeros((10, 10, 3), np.float32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        det.predict(np.zeros((10, 10, 4), np.uint8))
    gray = det.predict(np.full((40, 50), 90, np.uint8))  # gray is replicated, not an error
    assert gray["polygons"].shape[1] == 8
    with pytest.raises(FileNotFoundError):
        OnnxDetector(tmp_path / "missing.onnx")
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(foreign))
    with pytest.raises(ValueError, match="not exported by bbavectors"):
        OnnxDetector(foreign)


def test_export_bad_arguments(tmp_path: Path) -> None:
    model = peaky_model()
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, tmp_path / "a.onnx", input_size=64, opset=16)
    with pytest.raises(ValueError, match="class names"):
        export_onnx(model, tmp_path / "a.onnx", input_size=64, classes=["a", "b"])
    with pytest.raises(ValueError, match="top_k"):
        ExportWrapper(model, top_k=0)
    assert not list(tmp_path.iterdir())  # nothing half-written


# ---------------------------------------------------------------------------------- NMS option
def test_quad_iou_static_hand_values_and_shapely() -> None:
    square = [0, 0, 2, 0, 2, 2, 0, 2]
    shifted = [1, 0, 3, 0, 3, 2, 1, 2]  # half overlap: 2 / (4 + 4 - 2) = 1/3
    far = [10, 10, 11, 10, 11, 11, 10, 11]
    ccw = [0, 0, 0, 2, 2, 2, 2, 0]  # same square, other corner direction
    a = torch.tensor([square, square, square, square], dtype=torch.float32)
    b = torch.tensor([square, shifted, far, ccw], dtype=torch.float32)
    torch.testing.assert_close(quad_iou_static(a, b), torch.tensor([1.0, 1 / 3, 0.0, 1.0]))
    rng = np.random.default_rng(0)
    n = 400
    obb_a = np.column_stack([rng.uniform(20, 40, n), rng.uniform(20, 40, n), rng.uniform(4, 30, n),
                             rng.uniform(2, 15, n), rng.uniform(0, np.pi, n)])
    obb_b = obb_a + np.column_stack([rng.normal(0, 5, n), rng.normal(0, 5, n), rng.normal(0, 3, n).clip(-1),
                                     rng.normal(0, 2, n).clip(-1), rng.normal(0, 0.5, n)])
    pa, pb = obb_to_poly(obb_a), obb_to_poly(obb_b)
    got = quad_iou_static(torch.from_numpy(pa), torch.from_numpy(pb)).double().numpy()
    want = poly_iou(pa, pb)
    assert (want > 0.1).sum() > 100  # the sample really exercises overlaps
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_graph_nms_is_exact_greedy_not_fast_nms() -> None:
    """A suppresses B, B overlaps C but B is gone, so greedy keeps C (Fast-NMS would drop it)."""
    a = [0, 0, 10, 0, 10, 10, 0, 10]
    b = [5, 0, 15, 0, 15, 10, 5, 10]  # IoU(a, b) = 1/3
    c = [10, 0, 20, 0, 20, 10, 10, 10]  # IoU(a, c) = 0, IoU(b, c) = 1/3
    polys = torch.tensor([[c, a, b]], dtype=torch.float32)
    scores = torch.tensor([[0.7, 0.9, 0.8]])
    classes = torch.zeros(1, 3, dtype=torch.int64)
    p, s, c_out = graph_rotated_nms(polys, scores, classes, 0.2)
    torch.testing.assert_close(s, torch.tensor([[0.9, 0.0, 0.7]]))
    torch.testing.assert_close(p[0, 0], torch.tensor(a, dtype=torch.float32))
    # Another class is never suppressed.
    _, s2, _ = graph_rotated_nms(polys, scores, torch.tensor([[0, 0, 1]]), 0.2)
    torch.testing.assert_close(s2, torch.tensor([[0.9, 0.8, 0.7]]))


def test_graph_nms_matches_reference_on_random_clusters() -> None:
    rng = np.random.default_rng(1)
    batch, k = 3, 40
    centers = rng.uniform(20, 80, (batch, 6, 2))
    pick = rng.integers(0, 6, (batch, k))
    obb = np.concatenate([
        np.take_along_axis(centers, pick[..., None], 1) + rng.normal(0, 3, (batch, k, 2)),
        rng.uniform(10, 20, (batch, k, 1)), rng.uniform(5, 10, (batch, k, 1)),
        rng.uniform(0, np.pi, (batch, k, 1)),
    ], axis=2)
    polys = obb_to_poly(obb.reshape(-1, 5)).reshape(batch, k, 8)
    scores = rng.uniform(0.05, 1.0, (batch, k))
    classes = rng.integers(0, 2, (batch, k))
    p, s, c = graph_rotated_nms(torch.from_numpy(polys).float(), torch.from_numpy(scores).float(),
                                torch.from_numpy(classes), 0.1)
    total_kept = 0
    for i in range(batch):
        keep = rotated_nms_per_class(polys[i], scores[i], classes[i], 0.1)
        want = sorted(np.round(scores[i][keep], 5))
        got = sorted(np.round(s[i][s[i] > 0].double().numpy(), 5))
        assert got == want
        total_kept += len(keep)
    assert 0 < total_kept < batch * k  # NMS really removed boxes


def test_export_with_nms_in_graph(tmp_path: Path) -> None:
    model = TinyDetector(4, fixed_box=True)
    model.train()  # the export must not leave the caller's model in another mode
    cfg = tiny_config()
    path = export_onnx(model, tmp_path / "nms.onnx", input_size=128, top_k=20, with_nms=True, nms_thresh=0.1,
                       score_thresh=0.2, mean=cfg.data.mean, std=cfg.data.std, classes=SYNTHETIC)
    assert model.training
    model.eval()
    info = read_onnx_metadata(path)
    assert info.nms_in_graph and info.opset == 17
    wrapper = ExportWrapper(model, 20, 0.5, cfg.data.mean, cfg.data.std, nms_thresh=0.1)
    gen = torch.Generator().manual_seed(4)
    images = torch.randint(0, 256, (2, 3, 128, 160), dtype=torch.uint8, generator=gen)
    check = compare_graph_outputs(wrapper, path, images, "nms graph")
    assert check.ok(box_tol=1e-2, score_tol=1e-5), check.notes
    det = OnnxDetector(path, providers=["CPUExecutionProvider"])
    image = random_rgb(128, 180, seed=7)
    end_to_end = compare_runner(model, det, image, "nms runner")  # PyTorch side: decode_detections' NMS
    assert end_to_end.unmatched == 0 and end_to_end.num_matched > 0, end_to_end.notes
    raw = det.run_raw(det.preprocess([image])[0])[1][0]
    assert (raw == 0).sum() >= 5  # the graph suppressed overlapping boxes


@pytest.mark.parametrize("dynamic", [True, False])
def test_torchscript_exporter(tmp_path: Path, dynamic: bool) -> None:
    """The legacy exporter: batch dynamic (H, W frozen) with uint8 input, or a fully static graph of
    batch 1 with float (already normalised) input, which the runner normalises and feeds in chunks."""
    model = TinyDetector(5)
    cfg = tiny_config()
    with pytest.warns(Warning):  # torch deprecates the TorchScript exporter; it still works
        path = export_onnx(model, tmp_path / "ts.onnx", input_size=128, top_k=20, mean=cfg.data.mean,
                           std=cfg.data.std, dynamo=False, dynamic=dynamic, score_thresh=0.2,
                           normalize_inside=dynamic)
    info = read_onnx_metadata(path)
    assert (info.exporter, info.dynamic, info.opset) == ("torchscript", "batch" if dynamic else "none", 17)
    assert info.input_dtype == ("uint8" if dynamic else "float32")
    inside = (cfg.data.mean, cfg.data.std) if dynamic else (None, None)
    wrapper = ExportWrapper(model, 20, 0.5, *inside)
    for b in (1, 3) if dynamic else (1,):
        images = torch.randint(0, 256, (b, 3, 128, 128), dtype=torch.uint8)
        if not dynamic:
            images = normalize_images(images, cfg.data.mean, cfg.data.std)
        assert compare_graph_outputs(wrapper, path, images, f"ts b{b}").ok(1e-2, 1e-5)
    det = OnnxDetector(path, providers=["CPUExecutionProvider"])
    frames = [random_rgb(100, 150, seed=s) for s in range(3)]
    results = det.predict_batch(frames)  # 3 images through a batch-1 graph when static
    for frame, result in zip(frames, results):
        check = compare_detections(result, det.predict(frame), "batch vs single")
        assert check.unmatched == 0 and check.max_box_diff < 1e-3
    check = compare_runner(model, det, frames[2], "ts runner")
    assert check.unmatched == 0 and check.num_matched > 0, check.notes


# ------------------------------------------------------------------------------ the comparison
def test_compare_detections_reports_differences() -> None:
    p = np.array([[0, 0, 10, 0, 10, 10, 0, 10], [20, 20, 30, 20, 30, 30, 20, 30]], np.float64)
    base = {"polygons": p, "scores": np.array([0.9, 0.5]), "classes": np.array([0, 1])}
    swapped = {k: v[::-1] for k, v in base.items()}
    same = compare_detections(base, swapped)
    assert (same.max_box_diff, same.max_score_diff, same.unmatched, same.num_matched) == (0.0, 0.0, 0, 2)
    moved = dict(base, polygons=p + np.array([2.0, 0, 0, 0, 0, 0, 0, 0]), scores=base["scores"] + [0.01, 0])
    diff = compare_detections(base, moved)
    assert diff.max_box_diff == pytest.approx(2.0) and diff.max_score_diff == pytest.approx(0.01)
    assert not diff.ok()
    missing = {k: v[:1] for k, v in base.items()}
    extra = dict(base, scores=np.array([0.9, 0.5]))
    extra_plus = {k: np.concatenate([v, v[:1]]) for k, v in extra.items()}
    extra_plus["scores"] = np.array([0.9, 0.5, 0.7])  # a third detection, far from any cut-off
    assert compare_detections(missing, missing).unmatched == 0
    assert compare_detections(base, extra_plus).unmatched == 1
    # A detection at the cut-off (score threshold) may legitimately be on one side only.
    at_cut = {k: np.concatenate([v, v[:1]]) for k, v in base.items()}
    at_cut["scores"] = np.array([0.9, 0.5, 0.30001])
    assert compare_detections(base, at_cut, cutoff=0.3).unmatched == 0


def test_reference_predictor_returns_original_coordinates() -> None:
    model = peaky_model(6)
    cfg = tiny_config()
    cfg.data.input_size = 128
    cfg.decode = DecodeConfig(top_k=20, score_thresh=0.2, nms_thresh=0.0)
    predictor = Predictor(model, cfg, SYNTHETIC, device="cpu")
    image = random_rgb(512, 384, seed=6)
    det = predictor.predict_images([image])[0]
    canvas, params = letterbox_image(image, 128)
    raw = predictor.predict_images([canvas])[0]
    assert len(det["scores"]) > 0
    np.testing.assert_allclose(det["polygons"].numpy(), params.invert(raw["polygons"].double().numpy()),
                               atol=1e-3)


# ------------------------------------------------------------------------- test.py --onnx
def test_test_tool_with_onnx_equals_checkpoint_run(exported: tuple[Path, str], checkpoint: Path,
                                                   tmp_path: Path) -> None:
    """``tools/test.py --onnx`` runs the same job through ONNX Runtime (the same Predictor path, the
    graph as backend): the same Task1 detections as ``--checkpoint``, patches and scenes."""
    from DOTA_devkit.task1 import read_task1_dir

    path, _ = exported
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "a.png", random_rgb(200, 300, seed=1))
    write_image(images / "b.png", random_rgb(310, 180, seed=2))
    tool = load_tool("test")
    for extra in ([], ["--scenes", "--subsize", str(INPUT), "--gap", "32"]):
        runs = {}
        # The graph runs in float32: so does the checkpoint here (test.py's default is bf16 on a bf16 CPU).
        for name, source in (("onnx", ["--onnx", str(path)]),
                             ("torch", ["--checkpoint", str(checkpoint), "--amp", "none"])):
            out = tmp_path / f"{name}{len(extra)}"
            rc = tool.main([*source, "--images", str(images), "--out", str(out), "--device", "cpu",
                            "--workers", "0", "--quiet", "--score-thresh", "0.2", *extra])
            assert rc == 0
            runs[name] = read_task1_dir(out)
        total = 0
        for cls in SYNTHETIC:
            a, b = runs["onnx"][cls], runs["torch"][cls]
            for image_id in set(a.image_ids) | set(b.image_ids):
                sides = []
                for d in (a, b):
                    sel = [i for i, x in enumerate(d.image_ids) if x == image_id]
                    sides.append({"polygons": d.polygons[sel], "scores": d.scores[sel],
                                  "classes": np.zeros(len(sel))})
                check = compare_detections(sides[0], sides[1], cutoff=0.2)
                assert check.unmatched == 0 and check.max_box_diff < 1e-3, check.notes
                total += check.num_matched
        assert total > 0


def test_rectangles_decoder_exported_and_checked(exported: tuple[Path, str], tmp_path: Path) -> None:
    """``--rectangles`` puts the rectangle decoder into the graph (the tool's own check compares it
    with PyTorch), records it in the metadata, and runs like ``--checkpoint ... --rectangles``."""
    model = peaky_model()
    with torch.no_grad():
        model.heads.cls_theta[-1].bias.fill_(8.0)  # every box decoded from its (random) vectors
    checkpoint = tmp_path / "rotated.pt"
    save_checkpoint(checkpoint, model, tiny_config(), list(SYNTHETIC), epoch=1)
    out = tmp_path / "rect.onnx"
    argv = ["--checkpoint", str(checkpoint), "--out", str(out), "--input-size", str(INPUT),
            "--top-k", str(TOP_K), "--rectangles"]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        rc = load_tool("export_onnx").main(argv)
    assert rc == 0, buffer.getvalue()
    assert read_onnx_metadata(out).rectangles is True
    assert read_onnx_metadata(exported[0]).rectangles is False
    image = random_rgb(230, 270, seed=5)
    graph = Predictor.from_onnx(out, score_thresh=0.2)
    assert graph.decode_cfg.rectangles is True
    eager = Predictor.from_checkpoint(checkpoint, device="cpu", score_thresh=0.2, rectangles=True)
    plain = Predictor.from_checkpoint(checkpoint, device="cpu", score_thresh=0.2)
    got, want, raw = (p.predict_images([image])[0] for p in (graph, eager, plain))
    check = compare_detections(got, want, cutoff=0.2)
    assert check.num_matched > 0 and check.unmatched == 0 and check.max_box_diff < 1e-2, check.notes
    # The tiny model's vectors are not rectangles: the flag changes the boxes (the best-scored box is
    # the same peak either way; NMS may keep different others).
    assert float(want["scores"][0]) == float(raw["scores"][0])
    assert float((want["polygons"][0] - raw["polygons"][0]).abs().max()) > 0.5
    with pytest.raises(ValueError, match="exported graph"):
        Predictor(graph.onnx, graph.cfg, graph.classes, rectangles=False)  # type: ignore[arg-type]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = load_tool("test").main(["--onnx", str(out), "--images", str(tmp_path), "--out",
                                     str(tmp_path / "res"), "--no-rectangles"])
    assert rc == 2 and "--rectangles applies to --checkpoint" in err.getvalue()


# ------------------------------------------------------------------------------------ TensorRT
def test_tensorrt_engine_builds(exported: tuple[Path, str]) -> None:
    trt = pytest.importorskip("tensorrt", reason="tensorrt not installed (optional; docs/deployment.md)")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU")
    path, _ = exported
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(path.read_bytes()), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("images", (1, 3, 128, 128), (1, 3, INPUT, INPUT), (4, 3, 512, 512))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    assert engine is not None and engine.nbytes > 0


def test_aligned_grid_model_exports_with_its_offset(tmp_path: Path) -> None:
    """``model.align_grid``: the corner-aligned upsampling (interpolate align_corners + edge pad) and
    the decoder's grid offset go into the graph; any input size, through the runner too."""
    cfg = tiny_config()
    cfg.model.backbone, cfg.model.head_width, cfg.model.align_grid = "mobilenet_v2", 8, True
    torch.manual_seed(6)
    model = build_model(cfg, len(SYNTHETIC)).eval()
    with torch.no_grad():
        model.heads.hm[-1].weight.mul_(30.0)
    path = export_onnx(model, tmp_path / "aligned.onnx", input_size=128, top_k=20, mean=cfg.data.mean,
                       std=cfg.data.std, score_thresh=0.01, classes=SYNTHETIC)
    assert read_onnx_metadata(path).opset == 17
    wrapper = ExportWrapper(model, 20, 0.5, cfg.data.mean, cfg.data.std)
    assert wrapper.grid_offset == 1.5
    gen = torch.Generator().manual_seed(6)
    for hw in ((128, 128), (96, 161)):
        images = torch.randint(0, 256, (2, 3, *hw), dtype=torch.uint8, generator=gen)
        check = compare_graph_outputs(wrapper, path, images, f"aligned {hw}")
        assert check.ok(box_tol=1e-2, score_tol=1e-5), check.notes
    det = OnnxDetector(path, providers=["CPUExecutionProvider"])
    check = compare_runner(model, det, random_rgb(100, 150, seed=6), "aligned runner")
    assert check.unmatched == 0 and check.num_matched > 0, check.notes


def test_calibrated_centre_shift_goes_into_the_graph(tmp_path: Path) -> None:
    """``decode.centre_shift`` (the training's centre calibration) is part of the exported decoder
    and of the metadata, so an exported file answers what the checkpoint answers."""
    cfg = tiny_config()
    cfg.model.backbone, cfg.model.head_width = "mobilenet_v2", 8
    torch.manual_seed(7)
    model = build_model(cfg, len(SYNTHETIC)).eval()
    with torch.no_grad():
        model.heads.hm[-1].weight.mul_(30.0)
    shift = (1.25, -0.5)
    path = export_onnx(model, tmp_path / "shifted.onnx", input_size=128, top_k=20, mean=cfg.data.mean,
                       std=cfg.data.std, score_thresh=0.01, classes=SYNTHETIC, centre_shift=shift)
    assert read_onnx_metadata(path).centre_shift == shift
    plain = ExportWrapper(model, 20, 0.5, cfg.data.mean, cfg.data.std)
    shifted = ExportWrapper(model, 20, 0.5, cfg.data.mean, cfg.data.std, centre_shift=shift)
    gen = torch.Generator().manual_seed(7)
    images = torch.randint(0, 256, (2, 3, 128, 128), dtype=torch.uint8, generator=gen)
    with torch.no_grad():
        (p0, s0, _), (p1, _, _) = plain(images), shifted(images)
    real = s0 > 0
    assert real.any()
    torch.testing.assert_close(p1[real], (p0 + torch.tensor(list(shift) * 4))[real])
    check = compare_graph_outputs(shifted, path, images, "shifted")
    assert check.ok(box_tol=1e-2, score_tol=1e-5), check.notes
    det = OnnxDetector(path, providers=["CPUExecutionProvider"])
    check = compare_runner(model, det, random_rgb(100, 150, seed=7), "shifted runner")
    assert check.unmatched == 0 and check.num_matched > 0, check.notes
