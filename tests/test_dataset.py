"""DotaDataset, image reading, collate and loader: contract, bad inputs, real DOTA files."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bbavectors.config import AugmentConfig
from bbavectors.data.dataset import DotaDataset, collate_samples, list_images, read_split_file
from bbavectors.data.image_io import ImageReadError, read_image
from bbavectors.data.letterbox import LetterboxParams, letterbox_image
from bbavectors.data.loader import build_dataloader, worker_init
from DOTA_devkit.classes import DOTA_V1_0, SYNTHETIC
from DOTA_devkit.labels import LabelError

CLASSES = ("plane", "ship")


def write_bgr(path: Path, rgb: np.ndarray) -> None:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def make_root(
    tmp_path: Path, images: dict[str, np.ndarray], labels: dict[str, str], suffix: str = ".png"
) -> Path:
    (tmp_path / "images").mkdir()
    (tmp_path / "labelTxt").mkdir()
    for image_id, rgb in images.items():
        write_bgr(tmp_path / "images" / f"{image_id}{suffix}", rgb)
    for image_id, text in labels.items():
        (tmp_path / "labelTxt" / f"{image_id}.txt").write_text(text)
    return tmp_path


def red_image(h: int, w: int) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = 250
    img[: h // 2, :, 2] = 90
    return img


@pytest.fixture
def small_root(tmp_path: Path) -> Path:
    labels = {
        "a": "imagesource:test\ngsd:0.5\n10 20 110 20 110 60 10 60 plane 0\n"
             "150 80 190 80 190 95 150 95 ship 1\n",
        "b": "5 5 50 5 50 30 5 30 ship 2\n1 1 2 2 3 3 4 4 plane 0\nbad line\n1 1 9 1 9 9 1 9 tank 0\n",
    }
    return make_root(tmp_path, {"a": red_image(100, 200), "b": red_image(120, 120), "c": red_image(64, 32)},
                     labels)


def test_eval_sample_contract_and_hand_derived_geometry(small_root: Path) -> None:
    ds = DotaDataset(small_root, None, CLASSES, input_size=64)
    assert ds.image_ids == ["a", "b", "c"]
    s = ds[0]
    assert s["image"].dtype == torch.uint8 and s["image"].shape == (3, 64, 64)
    assert s["polygons"].dtype == torch.float32 and s["polygons"].shape == (2, 8)
    assert s["classes"].tolist() == [0, 1] and s["difficult"].tolist() == [0, 1]
    assert s["classes"].dtype == torch.int64 and s["difficult"].dtype == torch.int64
    assert s["image_id"] == "a" and s["orig_size"] == (100, 200)
    scale = 64 / 200
    torch.testing.assert_close(s["letterbox"], torch.tensor([scale, 0.0, 0.0]))
    expected = np.array([10, 20, 110, 20, 110, 60, 10, 60], np.float64) * scale
    np.testing.assert_allclose(s["polygons"][0].numpy(), expected, atol=1e-5)
    # Exactly the letterbox of the RGB image (decoded once, BGR -> RGB).
    canvas, _ = letterbox_image(red_image(100, 200), 64)
    np.testing.assert_array_equal(s["image"].permute(1, 2, 0).numpy(), canvas)
    assert s["image"][0, 0, 0] == 250 and s["image"][2, 0, 0] == 90  # RGB order, not BGR


def test_eval_letterbox_inverse_gives_original_label_coordinates(small_root: Path) -> None:
    ds = DotaDataset(small_root, None, CLASSES, input_size=608)
    for i in range(len(ds)):
        s = ds[i]
        params = LetterboxParams(*s["letterbox"].tolist())
        back = params.invert(s["polygons"].numpy().astype(np.float64))
        original = ds.label_file(i).polygons()
        assert back.shape == original.shape
        if original.size:
            assert np.abs(back - original).max() < 1e-3


def test_bad_labels_are_reported_and_skipped(small_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        ds = DotaDataset(small_root, None, CLASSES, input_size=64)
    kinds = sorted(i.kind for i in ds.label_report.issues)
    assert kinds == ["degenerate", "malformed", "unknown-class"]
    assert all("b.txt" in i.path for i in ds.label_report.issues)
    assert ds[1]["classes"].tolist() == [1] and ds[1]["difficult"].tolist() == [2]
    assert "3 object(s) kept" in caplog.text and "skipped:" in caplog.text
    with pytest.raises(LabelError, match=r"b\.txt:2"):
        DotaDataset(small_root, None, CLASSES, input_size=64, strict_labels=True)


def test_missing_label_file_is_an_empty_image_unless_required(
    small_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        ds = DotaDataset(small_root, None, CLASSES, input_size=64)
    assert ds.missing_labels == ["c"]
    assert "1 of 3 image(s) have no label file" in caplog.text
    s = ds[2]
    assert s["polygons"].shape == (0, 8) and s["classes"].shape == (0,)
    with pytest.raises(FileNotFoundError, match="require_labels"):
        DotaDataset(small_root, None, CLASSES, input_size=64, require_labels=True)


def test_split_files(small_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    (small_root / "trainval.txt").write_text("# training images\n\na\nb.png\nghost\na\n")
    assert read_split_file(small_root / "trainval.txt") == ["a", "b", "ghost"]
    with caplog.at_level(logging.WARNING):
        ds = DotaDataset(small_root, "trainval", CLASSES, input_size=64)
    assert ds.image_ids == ["a", "b"]
    assert ds.missing_images == ["ghost"] and "ghost" in caplog.text
    by_path = DotaDataset(small_root, small_root / "trainval.txt", CLASSES, input_size=64)
    assert by_path.image_ids == ["a", "b"]
    with pytest.raises(FileNotFoundError, match="val.txt"):
        DotaDataset(small_root, "val", CLASSES)
    (small_root / "empty.txt").write_text("ghost\n")
    with pytest.raises(ValueError, match="no images"):
        DotaDataset(small_root, "empty", CLASSES)


def test_class_list_from_classes_txt(small_root: Path) -> None:
    with pytest.raises(ValueError, match="classes.txt"):
        DotaDataset(small_root)
    (small_root / "classes.txt").write_text("plane\nship\n")
    assert DotaDataset(small_root).classes == CLASSES


def test_list_images_all_suffixes_and_clashes(tmp_path: Path) -> None:
    img = red_image(8, 8)
    for name in ("p.png", "j.JPG", "k.jpeg", "t.tif", "u.tiff", "m.bmp", "d.png"):
        write_bgr(tmp_path / name, img)
    (tmp_path / "notes.txt").write_text("x")
    found = list_images(tmp_path)
    assert sorted(found) == ["d", "j", "k", "m", "p", "t", "u"]
    assert found["d"].name == "d.png"
    # Issue 12: one listing rule for both packages: a second file with the stem "d" is an error
    # naming both files (it was tolerated here and an error in DOTA_devkit).
    write_bgr(tmp_path / "d.jpg", img)
    with pytest.raises(ValueError, match=r"two images with the id 'd': d\.jpg and d\.png"):
        list_images(tmp_path)
    with pytest.raises(ValueError, match="two images with the id 'd'"):
        DotaDataset(tmp_path.parent, None, CLASSES, image_dir=tmp_path.name)
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        list_images(tmp_path / "nothing")


def test_regression_one_list_images_for_both_packages() -> None:
    from DOTA_devkit import image_io

    assert list_images is image_io.list_images


def test_image_conversions(tmp_path: Path) -> None:
    gray16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1028).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    out = read_image(tmp_path / "g16.png")
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], ((gray16.astype(np.uint32) + 128) // 257).astype(np.uint8))
    assert read_image(tmp_path / "g16.png")[7, 7].tolist() == [252, 252, 252]  # 63 * 1028 / 257
    bgra = np.zeros((4, 4, 4), np.uint8)
    bgra[..., 0], bgra[..., 2], bgra[..., 3] = 10, 200, 0  # blue 10, red 200, fully transparent
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    assert read_image(tmp_path / "rgba.png")[0, 0].tolist() == [200, 0, 10]
    cv2.imwrite(str(tmp_path / "gray.jpg"), np.full((5, 7), 128, np.uint8))
    g = read_image(tmp_path / "gray.jpg")
    assert g.shape == (5, 7, 3) and abs(int(g[2, 3, 0]) - 128) <= 2


def test_unreadable_images_raise_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.png: empty file"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageReadError, match="junk.png: cannot decode"):
        read_image(tmp_path / "junk.png")
    with pytest.raises(ImageReadError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_corrupt_image_is_skipped_not_a_crash(small_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = (small_root / "images" / "b.png").read_bytes()
    (small_root / "images" / "b.png").write_bytes(good[: len(good) // 3])  # truncated PNG
    (small_root / "images" / "c.png").write_bytes(b"")  # empty file
    ds = DotaDataset(small_root, None, CLASSES, input_size=64, replace_unreadable=True)
    with caplog.at_level(logging.WARNING):
        s = ds[1]
    assert s["image_id"] == "a"  # b and c unreadable: wrapped around to the next readable one
    assert ds.num_unreadable == 2
    assert "b.png" in caplog.text and "c.png" in caplog.text
    assert ds[2]["image_id"] == "a" and ds.num_unreadable == 2  # remembered, not re-decoded
    assert ds.num_replaced == 2 and "training sample c replaced by a" in caplog.text
    (small_root / "images" / "a.png").write_bytes(b"")
    ds2 = DotaDataset(small_root, None, CLASSES, input_size=64, replace_unreadable=True)
    with pytest.raises(RuntimeError, match="no readable image"):
        ds2[0]


def test_regression_evaluation_reader_never_replaces_an_unreadable_image(small_root: Path) -> None:
    """An evaluation sample replaced by another image is scored against the wrong labels."""
    (small_root / "images" / "b.png").write_bytes(b"")
    ds = DotaDataset(small_root, None, CLASSES, input_size=64)  # augment=None: validation / test
    assert not ds.replace_unreadable
    with pytest.raises(ImageReadError, match="b.png: empty file"):
        ds[1]
    assert ds[0]["image_id"] == "a" and ds.num_replaced == 0
    train = DotaDataset(small_root, None, CLASSES, input_size=64, augment=AugmentConfig())
    assert train.replace_unreadable and train[1]["image_id"] == "c" and train.num_replaced == 1


def test_train_mode_augments_and_keeps_arrays_aligned(small_root: Path) -> None:
    cfg = AugmentConfig(rotate=0.5, scale_min=0.8, scale_max=1.2)
    ds = DotaDataset(small_root, None, CLASSES, input_size=96, augment=cfg)
    eval_ds = DotaDataset(small_root, None, CLASSES, input_size=96)
    different = 0
    for seed in range(6):
        s = ds.load_sample(0, np.random.default_rng(seed))
        n = s["polygons"].shape[0]
        assert s["image"].shape == (3, 96, 96) and s["classes"].shape == (n,) and s["difficult"].shape == (n,)
        assert set(s["classes"].tolist()) <= {0, 1}
        torch.testing.assert_close(s["letterbox"], eval_ds[0]["letterbox"])
        different += int(not torch.equal(s["image"], eval_ds[0]["image"]))
    assert different >= 5


def test_collate_samples(small_root: Path) -> None:
    ds = DotaDataset(small_root, None, CLASSES, input_size=64)
    batch = collate_samples([ds[0], ds[1], ds[2]])
    assert batch["images"].shape == (3, 3, 64, 64) and batch["images"].dtype == torch.uint8
    assert batch["images"].is_contiguous()
    assert [p.shape[0] for p in batch["polygons"]] == [2, 1, 0]
    assert [c.tolist() for c in batch["classes"]] == [[0, 1], [1], []]
    assert batch["image_ids"] == ["a", "b", "c"]
    assert batch["orig_sizes"] == [(100, 200), (120, 120), (64, 32)]
    assert batch["letterbox"].shape == (3, 3)
    with pytest.raises(ValueError, match="empty"):
        collate_samples([])


@pytest.fixture
def same_image_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    return make_root(tmp_path, {f"x{i}": img for i in range(4)},
                     {f"x{i}": "10 10 40 10 40 30 10 30 plane 0\n" for i in range(4)})


def test_workers_draw_different_augmentations(same_image_root: Path) -> None:
    # Regression: a generator created in the parent and copied into forked workers would give
    # every worker the same random draws (identical "augmented" batches).
    ds = DotaDataset(same_image_root, None, CLASSES, input_size=64, augment=AugmentConfig(rotate=1.0))
    loader = build_dataloader(ds, batch_size=1, shuffle=False, workers=2, seed=3)
    assert loader.persistent_workers and loader.prefetch_factor == 2
    images = [b["images"][0] for b in loader]
    # Batches 0 and 1 come from workers 0 and 1, each at its first draw.
    assert not torch.equal(images[0], images[1])
    again = [b["images"][0] for b in build_dataloader(ds, 1, False, 2, seed=3)]
    assert all(torch.equal(a, b) for a, b in zip(images, again))  # the seed makes runs repeatable


def test_loader_in_main_process_is_seeded_and_batches(same_image_root: Path) -> None:
    ds = DotaDataset(same_image_root, None, CLASSES, input_size=64, augment=AugmentConfig())
    first = next(iter(build_dataloader(ds, batch_size=3, shuffle=True, workers=0, seed=5)))
    second = next(iter(build_dataloader(ds, batch_size=3, shuffle=True, workers=0, seed=5)))
    assert first["images"].shape == (3, 3, 64, 64)
    assert first["image_ids"] == second["image_ids"] and torch.equal(first["images"], second["images"])
    batches = list(build_dataloader(ds, batch_size=3, shuffle=False, workers=0, drop_last=True))
    assert len(batches) == 1
    with pytest.raises(ValueError, match="batch_size"):
        build_dataloader(ds, 0, False, 0)


def test_worker_init_turns_off_opencv_threads() -> None:
    before = cv2.getNumThreads()
    try:
        worker_init(0)
        assert cv2.getNumThreads() in (0, 1)
        assert not cv2.ocl.useOpenCL()
    finally:
        cv2.setNumThreads(before)


def test_distributed_sampler(same_image_root: Path, tmp_path: Path) -> None:
    import torch.distributed as dist

    ds = DotaDataset(same_image_root, None, CLASSES, input_size=64)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        loader = build_dataloader(ds, batch_size=4, shuffle=True, workers=0, distributed=True, seed=1)
        assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
        orders = []
        for epoch in range(4):
            loader.sampler.set_epoch(epoch)
            orders.append(next(iter(loader))["image_ids"])
        assert all(sorted(o) == ["x0", "x1", "x2", "x3"] for o in orders)
        assert len({tuple(o) for o in orders}) > 1  # set_epoch reshuffles
    finally:
        dist.destroy_process_group()


def test_real_dota_patch_with_difficult_2_and_zero_area_polygons(shared_data: Path) -> None:
    root = shared_data / "dota_demo"
    ds = DotaDataset(root, None, DOTA_V1_0, input_size=608)
    assert len(ds) == 4
    index = ds.image_ids.index("P1478__1__853___962")
    degenerate = [i for i in ds.label_report.issues if i.kind == "degenerate"]
    assert len(degenerate) == 2 and all("P1478" in i.path for i in degenerate)
    s = ds[index]
    assert s["orig_size"] == (1024, 1024) and s["image"].shape == (3, 608, 608)
    assert set(s["difficult"].tolist()) == {0, 1, 2}
    params = LetterboxParams(*s["letterbox"].tolist())
    back = params.invert(s["polygons"].numpy().astype(np.float64))
    assert np.abs(back - ds.label_file(index).polygons()).max() < 1e-3
    train = DotaDataset(root, None, DOTA_V1_0, input_size=608, augment=AugmentConfig(rotate=0.5))
    t = train.load_sample(index, np.random.default_rng(0))
    assert t["polygons"].shape[0] > 0 and t["polygons"].shape[0] == t["classes"].shape[0]


def test_real_ssdd_jpeg_split_without_header(shared_data: Path) -> None:
    ds = DotaDataset(shared_data / "ssdd_rbox_train", "trainval", ("ship",), input_size=320)
    assert len(ds) == 928 and not ds.missing_images and not ds.label_report.issues
    assert ds.label_report.objects == 2017
    s = ds[0]
    assert s["image"].shape == (3, 320, 320) and (s["classes"] == 0).all()


def test_synthetic_classes_round_trip(tmp_path: Path) -> None:
    from bbavectors.data.synthetic import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "syn", 6, seed=2, image_size=96, progress=False,
                                  num_objects=(2, 4), size_range=(12.0, 40.0))
    ds = DotaDataset(root, "trainval", input_size=96)
    assert ds.classes == SYNTHETIC and not ds.label_report.issues
    assert sum(ds.class_counts().values()) == ds.label_report.objects > 0


def test_regression_replaced_samples_are_counted_across_loader_workers(small_root: Path) -> None:
    """Replacements happen in worker processes: their per-process counters never reached the main
    process, so a run could not report how many samples stood in for unreadable images."""
    (small_root / "images" / "b.png").write_bytes(b"")
    (small_root / "images" / "c.png").write_bytes(b"")
    ds = DotaDataset(small_root, None, CLASSES, input_size=64, replace_unreadable=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_samples)
    batches = list(loader)
    assert sum(b["num_replaced"] for b in batches) == 2  # samples 1 (b) and 2 (c) were replaced
    assert ds.num_replaced == 0  # the main process's own counter saw none of it
    assert [i for b in batches for i in b["image_ids"]] == ["a", "a", "a"]
