"""Decoding: batched decode_topk against a slow per-pixel reference, the cls_theta switch by hand,
letterbox inversion, thresholds, NMS, padding, and ONNX exportability."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from bbavectors.config import DecodeConfig
from bbavectors.decode import decode_detections, decode_topk


def _random_outputs(batch: int, classes: int, h: int, w: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "hm": torch.randn(batch, classes, h, w, generator=g) * 3,
        "wh": torch.randn(batch, 10, h, w, generator=g) * 5,
        "reg": torch.rand(batch, 2, h, w, generator=g),
        "cls_theta": torch.randn(batch, 1, h, w, generator=g) * 3,
    }


def reference_decode(outputs, top_k, thresh, down_ratio=4):
    """Per image, per pixel: peaks (>= every in-map neighbour), best top_k by logit, corners by the
    rules of bbavectors.decode written out longhand."""
    hm = outputs["hm"].double().numpy()
    batch, num_classes, h, w = hm.shape
    result = []
    for b in range(batch):
        cands = []
        for c in range(num_classes):
            for y in range(h):
                for x in range(w):
                    v = hm[b, c, y, x]
                    nb = hm[b, c, max(0, y - 1):y + 2, max(0, x - 1):x + 2]
                    if v >= nb.max():
                        cands.append((v, c, y, x))
        cands.sort(key=lambda t: -t[0])
        dets = []
        for v, c, y, x in cands[:top_k]:
            reg = outputs["reg"][b, :, y, x].double().numpy()
            wh = outputs["wh"][b, :, y, x].double().numpy() * down_ratio
            cx, cy = (x + reg[0]) * down_ratio, (y + reg[1]) * down_ratio
            if 1 / (1 + math.exp(-float(outputs["cls_theta"][b, 0, y, x]))) > thresh:
                t, r, bb, l = wh[0:2], wh[2:4], wh[4:6], wh[6:8]
            else:
                ew, eh = wh[8], wh[9]
                t, r = np.array([0, -eh / 2]), np.array([ew / 2, 0])
                bb, l = np.array([0, eh / 2]), np.array([-ew / 2, 0])
            c0 = np.array([cx, cy])
            poly = np.concatenate([c0 + t + l, c0 + t + r, c0 + bb + r, c0 + bb + l])
            dets.append((1 / (1 + math.exp(-v)), c, poly))
        result.append(dets)
    return result


@pytest.mark.parametrize(
    ("batch", "classes", "h", "w", "top_k"), [(3, 4, 9, 11, 25), (1, 1, 6, 5, 200), (2, 2, 1, 1, 3)]
)
def test_decode_topk_matches_slow_reference(batch: int, classes: int, h: int, w: int, top_k: int) -> None:
    outputs = _random_outputs(batch, classes, h, w)
    polys, scores, cls = decode_topk(outputs, top_k, 0.5)
    assert polys.shape == (batch, top_k, 8) and scores.shape == (batch, top_k) and cls.shape == (batch, top_k)
    assert polys.dtype == torch.float32 and cls.dtype == torch.int64
    ref = reference_decode(outputs, top_k, 0.5)
    for b in range(batch):
        n = len(ref[b])
        assert n <= top_k
        np.testing.assert_allclose(scores[b, :n].numpy(), [d[0] for d in ref[b]], rtol=1e-6)
        np.testing.assert_array_equal(cls[b, :n].numpy(), [d[1] for d in ref[b]])
        np.testing.assert_allclose(polys[b, :n].numpy(), np.stack([d[2] for d in ref[b]]), atol=1e-4)
        # Padding when the map has fewer peaks than top_k.
        assert (scores[b, n:] == 0).all() and (polys[b, n:] == 0).all() and (cls[b, n:] == 0).all()
    assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_per_class_then_overall_topk_equals_flat_topk() -> None:
    outputs = _random_outputs(2, 5, 12, 12, seed=3)
    _, scores, cls = decode_topk(outputs, 17, 0.5)
    hm = outputs["hm"]
    peak = hm == torch.nn.functional.max_pool2d(hm, 3, 1, 1)
    flat = torch.where(peak, hm, torch.full_like(hm, -torch.inf)).flatten(1)
    best, idx = flat.topk(17, dim=1)
    assert torch.allclose(scores, torch.sigmoid(best)) and torch.equal(cls, idx // (12 * 12))


def test_batch_decoding_equals_image_by_image() -> None:
    outputs = _random_outputs(4, 3, 10, 13, seed=5)
    cfg = DecodeConfig(top_k=30, score_thresh=0.3, nms_thresh=0.3)
    batched = decode_detections(outputs, cfg)
    for i in range(4):
        alone = decode_detections({k: v[i:i + 1] for k, v in outputs.items()}, cfg)[0]
        for key in ("polygons", "scores", "classes"):
            assert torch.equal(batched[i][key], alone[key]), key


def _single_peak(vectors, ext_wh, theta_logit, reg=(0.25, 0.75), at=(3, 2), h=8, w=8):
    out = {
        "hm": torch.full((1, 1, h, w), -10.0),
        "wh": torch.zeros(1, 10, h, w),
        "reg": torch.zeros(1, 2, h, w),
        "cls_theta": torch.zeros(1, 1, h, w),
    }
    x, y = at
    out["hm"][0, 0, y, x] = 5.0
    out["wh"][0, :8, y, x] = torch.tensor(vectors, dtype=torch.float32)
    out["wh"][0, 8:, y, x] = torch.tensor(ext_wh, dtype=torch.float32)
    out["reg"][0, :, y, x] = torch.tensor(reg)
    out["cls_theta"][0, 0, y, x] = theta_logit
    return out


def test_cls_theta_switch_by_hand() -> None:
    # Centre (3.25, 2.75) * 4 = (13, 11). Vectors t=(1,-2), r=(2,1), b=(-1,2), l=(-2,-1) in cells.
    vectors = [1, -2, 2, 1, -1, 2, -2, -1]
    rotated = _single_peak(vectors, (6, 4), theta_logit=3.0)
    polys, scores, _ = decode_topk(rotated, 1, 0.5)
    assert float(scores[0, 0]) == pytest.approx(1 / (1 + math.exp(-5)))
    # tl = c + 4(t + l) = (13, 11) + 4(-1, -3); tr = c + 4(3, -1); br = c + 4(1, 3); bl = c + 4(-3, 1).
    np.testing.assert_allclose(polys[0, 0].numpy(), [9, -1, 25, 7, 17, 23, 1, 15], atol=1e-5)
    level = _single_peak(vectors, (6, 4), theta_logit=-3.0)
    polys, _, _ = decode_topk(level, 1, 0.5)
    # External box 24 x 16 px around (13, 11).
    np.testing.assert_allclose(polys[0, 0].numpy(), [1, 3, 25, 3, 25, 19, 1, 19], atol=1e-5)
    # The switch reads the probability against the threshold.
    polys, _, _ = decode_topk(rotated, 1, 0.96)  # sigmoid(3) = 0.9526
    np.testing.assert_allclose(polys[0, 0].numpy(), [1, 3, 25, 3, 25, 19, 1, 19], atol=1e-5)


def test_rectangles_by_hand() -> None:
    # A rhombus in cells: t = (2, -0.75), r = (2, 0.75), b = -t, l = -r (half edges p = t, q = r),
    # the diamond with corners c + 4(t + l) = c + (0, -6), c + 4(t + r) = c + (16, 0), ...; its
    # Gaussian is the axis-aligned box of half sides 4 * 2 * sqrt(2) by 4 * 0.75 * sqrt(2) cells.
    vectors = [2, -0.75, 2, 0.75, -2, 0.75, -2, -0.75]
    peak = _single_peak(vectors, (6, 4), theta_logit=3.0)
    diamond, _, _ = decode_topk(peak, 1, 0.5)
    np.testing.assert_allclose(diamond[0, 0].numpy(), [13, 5, 29, 11, 13, 17, -3, 11], atol=1e-5)
    rect, _, _ = decode_topk(peak, 1, 0.5, rectangles=True)
    a, b = 8 * math.sqrt(2), 3 * math.sqrt(2)
    want = [13 - a, 11 - b, 13 + a, 11 - b, 13 + a, 11 + b, 13 - a, 11 + b]
    np.testing.assert_allclose(rect[0, 0].numpy(), want, atol=1e-4)
    # A level box (cls_theta off) keeps its external box either way.
    level = _single_peak(vectors, (6, 4), theta_logit=-3.0)
    for flag in (False, True):
        polys, _, _ = decode_topk(level, 1, 0.5, rectangles=flag)
        np.testing.assert_allclose(polys[0, 0].numpy(), [1, 3, 25, 3, 25, 19, 1, 19], atol=1e-5)
    # decode_detections reads the flag from the config.
    dets = decode_detections(peak, DecodeConfig(top_k=1, score_thresh=0.0, rectangles=True))[0]
    np.testing.assert_allclose(dets["polygons"][0].numpy(), rect[0, 0].numpy(), atol=1e-5)


def test_rectangles_keep_rectangular_predictions() -> None:
    outputs = _random_outputs(2, 2, 8, 8, seed=4)
    # Make every cell's vectors a rectangle: t, r from random values, b = -t, l = -r, r _|_ t.
    wh = outputs["wh"]
    t = wh[:, 0:2]
    r = torch.stack([-t[:, 1], t[:, 0]], dim=1) * 1.7
    outputs["wh"] = torch.cat([t, r, -t, -r, wh[:, 8:]], dim=1)
    plain = decode_topk(outputs, 30, 0.5)
    rect = decode_topk(outputs, 30, 0.5, rectangles=True)
    got = rect[0].reshape(2, 30, 4, 2).double()
    want = plain[0].reshape(2, 30, 4, 2).double()
    assert torch.equal(rect[1], plain[1]) and torch.equal(rect[2], plain[2])
    for i in range(2):
        for k in range(30):
            assert float(torch.cdist(got[i, k], want[i, k]).min(dim=1).values.max()) < 1e-3


def test_letterbox_inverse_per_image() -> None:
    outputs = _random_outputs(2, 2, 8, 8, seed=9)
    cfg = DecodeConfig(top_k=10, score_thresh=0.0, nms_thresh=0.0)
    plain = decode_detections(outputs, cfg)
    lb = torch.tensor([[0.5, 3.0, 7.0], [2.0, 0.0, 0.0]])
    mapped = decode_detections(outputs, cfg, letterbox=lb)
    for i in range(2):
        expect = plain[i]["polygons"].clone()
        expect[:, 0::2] = (expect[:, 0::2] - lb[i, 1]) / lb[i, 0]
        expect[:, 1::2] = (expect[:, 1::2] - lb[i, 2]) / lb[i, 0]
        assert torch.allclose(mapped[i]["polygons"], expect, atol=1e-4)
    with pytest.raises(ValueError, match="letterbox"):
        decode_detections(outputs, cfg, letterbox=torch.ones(3, 3))


def test_score_threshold_and_rotated_nms() -> None:
    out = {
        "hm": torch.full((1, 2, 10, 10), -10.0),
        "wh": torch.zeros(1, 10, 10, 10),
        "reg": torch.zeros(1, 2, 10, 10),
        "cls_theta": torch.full((1, 1, 10, 10), -5.0),
    }
    # Two same-class peaks 2 cells apart with 40 x 40 px boxes (IoU 0.67), a third of another class
    # on the second one's cell, and a weak fourth.
    out["hm"][0, 0, 4, 4] = 3.0
    out["hm"][0, 0, 4, 6] = 2.0
    out["hm"][0, 1, 4, 6] = 1.0
    out["hm"][0, 0, 8, 1] = -2.0  # sigmoid 0.119
    out["wh"][0, 8:] = 10.0
    res = decode_detections(out, DecodeConfig(top_k=10, score_thresh=0.1, nms_thresh=0.5))[0]
    assert res["classes"].tolist() == [0, 1, 0]
    assert torch.allclose(res["scores"], torch.sigmoid(torch.tensor([3.0, 1.0, -2.0])))
    no_nms = decode_detections(out, DecodeConfig(top_k=10, score_thresh=0.1, nms_thresh=0.0))[0]
    assert no_nms["classes"].tolist() == [0, 0, 1, 0]
    weakest = float(torch.sigmoid(torch.tensor(-2.0)))
    strict = decode_detections(out, DecodeConfig(top_k=10, score_thresh=weakest, nms_thresh=0.0))[0]
    assert len(strict["scores"]) == 3
    for r in (res, no_nms):
        assert r["polygons"].dtype == torch.float32 and r["classes"].dtype == torch.int64


def test_saturated_neighbours_do_not_become_peaks() -> None:
    # Logits 30 and 25 both give sigmoid == 1.0 in float32; peaks are found on logits, so only one.
    out = _single_peak([1, -2, 2, 1, -1, 2, -2, -1], (6, 4), 3.0)
    out["hm"][0, 0, 2, 3] = 30.0
    out["hm"][0, 0, 2, 4] = 25.0
    res = decode_detections(out, DecodeConfig(top_k=5, score_thresh=0.5, nms_thresh=0.0))[0]
    assert len(res["scores"]) == 1


def test_half_precision_outputs_and_empty_results() -> None:
    outputs = {k: v.half() for k, v in _random_outputs(2, 3, 6, 6).items()}
    polys, scores, _ = decode_topk(outputs, 8, 0.5)
    assert polys.dtype == torch.float32 and scores.dtype == torch.float32
    nothing = decode_detections({k: v.float() for k, v in outputs.items()}, DecodeConfig(score_thresh=1.0))
    assert all(r["polygons"].shape == (0, 8) and r["scores"].shape == (0,) for r in nothing)
    with pytest.raises(ValueError, match="top_k"):
        decode_topk(outputs, 0, 0.5)


def test_decoded_corners_are_the_geometry_modules_polygon_of_the_planted_box() -> None:
    """A box planted as the head outputs of one peak (centre, t/r/b/l vectors from
    ``bbavectors.geometry.obb_to_tlrb``) decodes to ``obb_to_poly`` of the same box: the decode and
    the geometry module agree on corner order and orientation, for tilted and level boxes."""
    from bbavectors.geometry import obb_to_poly, obb_to_tlrb, tlrb_to_poly

    down = 4
    obbs = torch.tensor([[26.0, 18.0, 20.0, 8.0, 0.5], [42.0, 30.0, 12.0, 6.0, -1.0]])
    outputs = {"hm": torch.full((1, 1, 12, 16), -10.0), "wh": torch.zeros(1, 10, 12, 16),
               "reg": torch.zeros(1, 2, 12, 16), "cls_theta": torch.full((1, 1, 12, 16), 5.0)}
    for k, obb in enumerate(obbs):
        cx, cy = float(obb[0]) / down, float(obb[1]) / down
        x, y = int(cx), int(cy)
        outputs["hm"][0, 0, y, x] = 4.0 - k
        outputs["reg"][0, :, y, x] = torch.tensor([cx - x, cy - y])
        outputs["wh"][0, :8, y, x] = obb_to_tlrb(obb[None])[0].reshape(8) / down
    polys, _, _ = decode_topk(outputs, 2, 0.5, down)
    expected = tlrb_to_poly(obbs[:, :2], obb_to_tlrb(obbs))
    np.testing.assert_allclose(polys[0].numpy(), expected.numpy(), atol=1e-4)
    # The same four corners as the box itself, whatever corner comes first.
    for got, corners in zip(polys[0].reshape(2, 4, 2), obb_to_poly(obbs).reshape(2, 4, 2)):
        dist = torch.cdist(got.double(), corners.double())
        assert float(dist.min(dim=1).values.max()) < 1e-3


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("rectangles", [False, True])
def test_decode_topk_exports_to_onnx(rectangles: bool) -> None:
    ort = pytest.importorskip("onnxruntime")

    class Wrapper(torch.nn.Module):
        def forward(self, hm, wh, reg, theta):  # type: ignore[no-untyped-def]
            return decode_topk({"hm": hm, "wh": wh, "reg": reg, "cls_theta": theta}, 40, 0.5,
                               rectangles=rectangles)

    outputs = _random_outputs(2, 3, 6, 5, seed=2)
    args = (outputs["hm"], outputs["wh"], outputs["reg"], outputs["cls_theta"])
    buf = io.BytesIO()
    torch.onnx.export(Wrapper().eval(), args, buf, dynamo=False, opset_version=17)
    session = ort.InferenceSession(buf.getvalue())
    got = session.run(None, {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)})
    for g, e in zip(got, Wrapper()(*args)):
        np.testing.assert_allclose(g, e.numpy(), atol=1e-5)
