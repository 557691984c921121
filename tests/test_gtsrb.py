"""GTSRB: cv2-exact histogram equalisation, splits, the offline augmentation, the data module and the CLI."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robustxai.data import augment
from robustxai.data.augment import (augment_training_split, balance_classes, homography_from_points,
                                    projective_jitter, random_warps, rotation_about_centre, translation, warp)
from robustxai.data.equalize import equalize_hist
from robustxai.data.gtsrb import GTSRB_CLASS_NAMES, GTSRBDataModule
from robustxai.data.splits import fraction_per_class, split_per_class
from robustxai.errors import DatasetError
from tests.conftest import ROOT, results, run_cli, shared_dataset


def _cache() -> Path:
    """The cache the CLI uses by default, so decoded real data is shared between tests and runs."""
    return Path(os.environ.get("ROBUSTXAI_CACHE", ROOT / ".cache"))


# -- histogram equalisation -------------------------------------------------------------------------
def test_equalisation_on_a_hand_computed_example():
    # 12 pixels: value 10 twice (the lowest), 20 three times, 30 seven times. scale = 255 / (12 - 2) = 25.5;
    # 20 -> (5 - 2) * 25.5 = 76.5 -> 76 (OpenCV rounds half to even), 30 -> 10 * 25.5 = 255, 10 -> 0.
    row = torch.tensor([10, 20, 30, 30, 10, 20, 30, 30, 20, 30, 30, 30], dtype=torch.uint8).view(1, 1, 1, 12)
    expected = torch.tensor([0, 76, 255, 255, 0, 76, 255, 255, 76, 255, 255, 255], dtype=torch.uint8)
    assert torch.equal(equalize_hist(row).flatten(), expected)
    constant = torch.full((1, 3, 4, 4), 77, dtype=torch.uint8)  # OpenCV leaves a constant channel as it is
    assert torch.equal(equalize_hist(constant), constant)


def test_equalisation_treats_channels_separately_and_is_monotone():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 8, 8), generator=g, dtype=torch.uint8)
    out = equalize_hist(images)
    for c in range(3):
        torch.testing.assert_close(equalize_hist(images[:, c:c + 1]), out[:, c:c + 1], rtol=0, atol=0)
    flat_in, flat_out = images.flatten(2).long(), out.flatten(2).long()
    order = flat_in.argsort(dim=2)
    assert (flat_out.gather(2, order).diff(dim=2) >= 0).all()  # order-preserving
    assert (flat_out.amax(dim=2) == 255).all() and (flat_out.amin(dim=2) == 0).all()
    with pytest.raises(ValueError, match="uint8"):
        equalize_hist(images.float())


def test_equalisation_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (200, 3, 13, 9), generator=g, dtype=torch.uint8)
    images[:50] = images[:50] // 64 * 64 + 3  # few distinct values: many ties and half-way roundings
    images[50, 1] = 9  # a constant channel
    reference = np.stack([[cv2.equalizeHist(np.ascontiguousarray(ch)) for ch in im] for im in images.numpy()])
    assert np.array_equal(equalize_hist(images).numpy(), reference)


# -- splits ----------------------------------------------------------------------------------------
def test_stratified_split_sizes_and_determinism():
    labels = torch.repeat_interleave(torch.arange(5), torch.tensor([10, 3, 7, 1, 40]))
    per_class = fraction_per_class(labels, 0.2, 5)
    assert per_class.tolist() == [2, 1, 1, 0, 8]  # round(0.2 n), at least 1 where n >= 2, never the whole class
    test, train = split_per_class(labels, per_class, seed=3)
    assert torch.equal(torch.bincount(labels[test], minlength=5), per_class)
    assert torch.equal(torch.sort(torch.cat([test, train])).values, torch.arange(len(labels)))
    again = split_per_class(labels, per_class, seed=3)
    assert torch.equal(again[0], test) and torch.equal(again[1], train)
    assert not torch.equal(split_per_class(labels, per_class, seed=4)[0], test)


# -- offline augmentation --------------------------------------------------------------------------
def test_warp_identity_rotation_and_translation_are_exact():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 10, 10), generator=g, dtype=torch.uint8)
    assert torch.equal(warp(images, torch.eye(3).repeat(4, 1, 1)), images)
    quarter = rotation_about_centre(torch.full((4,), 90.0), 10, 10)
    assert torch.equal(warp(images, quarter), torch.rot90(images, 1, (2, 3)))
    shifted = warp(images, translation(torch.tensor([[2.0, -1.0]]).repeat(4, 1)))  # reads x+2, y-1
    expected = images[:, :, [0] + list(range(9)), :][:, :, :, list(range(2, 10)) + [9, 9]]  # edge fill
    assert torch.equal(shifted, expected)


def test_homographies_map_the_points_and_match_opencv():
    g = torch.Generator().manual_seed(2)
    src = torch.rand(6, 4, 2, generator=g, dtype=torch.float64) * 32
    dst = src + torch.rand(6, 4, 2, generator=g, dtype=torch.float64) * 5
    h = homography_from_points(src, dst)
    mapped = torch.cat([src, torch.ones(6, 4, 1, dtype=torch.float64)], dim=2) @ h.transpose(1, 2)
    torch.testing.assert_close(mapped[..., :2] / mapped[..., 2:], dst)
    cv2 = pytest.importorskip("cv2")
    reference = np.stack([cv2.getPerspectiveTransform(s.numpy().astype(np.float32), d.numpy().astype(np.float32))
                          for s, d in zip(src, dst)])
    np.testing.assert_allclose(h.numpy(), reference, rtol=1e-4, atol=1e-4)


def test_warp_matches_opencv_warp_perspective():
    cv2 = pytest.importorskip("cv2")
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (32, 3, 32, 32), generator=g, dtype=torch.uint8)
    maps = random_warps(32, 32, 32, g)
    ours = warp(images, maps).numpy().astype(int)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP  # the matrix maps output pixels to input pixels
    reference = np.stack([cv2.warpPerspective(np.ascontiguousarray(im.transpose(1, 2, 0)), m.numpy(), (32, 32),
                                              flags=flags, borderMode=cv2.BORDER_REPLICATE).transpose(2, 0, 1)
                          for im, m in zip(images.numpy(), maps)]).astype(int)
    assert np.abs(ours - reference).max() <= 1  # OpenCV interpolates in 1/32-pixel fixed point


def test_random_warp_parameters_stay_in_the_seed_ranges():
    g = torch.Generator().manual_seed(4)
    size = 32
    corners = torch.tensor([[0, 0], [0, size], [size, size], [size, 0]], dtype=torch.float64)
    maps = projective_jitter(2000, size, g)
    homog = torch.cat([corners, torch.ones(4, 1, dtype=torch.float64)], dim=1)
    back = homog @ torch.linalg.inv(maps).transpose(1, 2)  # where the corners came from: the jittered points
    offsets = (back[..., :2] / back[..., 2:] - corners).abs()
    assert offsets.max() <= 0.3 * size * 0.8 + 1e-9 and offsets.max() > 0.9 * 0.3 * size * 0.8
    rotations = random_warps(2000, size, size, g, max_shift=0.0, max_intensity=0.0)
    angles = torch.rad2deg(torch.atan2(rotations[:, 1, 0], rotations[:, 0, 0])).abs()
    assert angles.max() <= 15 + 1e-9 and angles.max() > 14
    shifts = random_warps(2000, size, size, g, max_rotation=0.0, max_intensity=0.0)[:, :2, 2].abs()
    assert shifts.max() <= 2.5 + 1e-9 and shifts.max() > 2.4


def _constant_images(values: torch.Tensor, size: int = 8) -> torch.Tensor:
    return values.to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, size, size).contiguous()


def test_balancing_keeps_originals_and_cycles_them():
    labels = torch.tensor([0, 1, 0, 2, 0, 1, 2, 2, 2, 2, 2])
    images = _constant_images(torch.arange(len(labels)) * 10 + 5)  # a warped constant image keeps its value
    out, out_labels = balance_classes(images, labels, per_class=7, seed=0, num_classes=3)
    assert out.dtype == torch.uint8 and out.shape == (21, 3, 8, 8)
    assert torch.bincount(out_labels).tolist() == [7, 7, 7]
    assert torch.equal(out[:11], images) and torch.equal(out_labels[:11], labels)
    sources = (out[11:, 0, 0, 0].long() - 5) // 10  # which original each extra came from
    assert torch.equal(labels[sources], out_labels[11:])
    assert sources[out_labels[11:] == 0].tolist() == [0, 2, 4, 0]  # class 0: its originals 0, 2, 4 in turn
    assert sources[out_labels[11:] == 1].tolist() == [1, 5, 1, 5, 1]
    assert sources[out_labels[11:] == 2].tolist() == [3]  # class 2 had 6: one extra
    capped, _ = balance_classes(images, labels, per_class=2, seed=0, num_classes=3)
    assert torch.equal(capped, images)  # classes at or above the target keep all originals, get no extras
    with pytest.raises(ValueError, match="no images"):
        balance_classes(images, labels, per_class=7, seed=0, num_classes=4)
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        balance_classes(images, labels, per_class=7, seed=0, num_classes=2)


def test_augmentation_is_deterministic_under_its_seed_and_in_range():
    g = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (20, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.arange(20) % 4
    first = balance_classes(images, labels, per_class=30, seed=7, num_classes=4)
    second = balance_classes(images, labels, per_class=30, seed=7, num_classes=4)
    other = balance_classes(images, labels, per_class=30, seed=8, num_classes=4)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], other[0])
    extras = first[0][20:]
    assert extras.dtype == torch.uint8 and extras.shape == (100, 3, 32, 32)
    assert not any(torch.equal(extras[i], images[j]) for i in range(5) for j in range(20))
    floats = warp(images.float() / 255, random_warps(20, 32, 32, g))
    assert floats.dtype == torch.float32 and floats.min() >= 0 and floats.max() <= 1


def test_augmented_training_split_never_touches_the_validation_prefix():
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    images = _constant_images(torch.arange(6) * 10 + 5)
    out, _ = augment_training_split(images, labels, val_size=2, per_class=4, seed=0, num_classes=2)
    assert torch.equal(out[:2], images[:2]) and len(out) == 2 + 8
    used = set(((out[2:, 0, 0, 0].long() - 5) // 10).tolist())
    assert used == {2, 3, 4, 5}  # no extra is made from the validation images 0 and 1


def test_augmented_gtsrb_size_in_bytes():
    assert augment.augmented_size_bytes(43, 10000, (3, 32, 32)) == 43 * 10000 * 3072  # the 1.3 GB in the docs


# -- the data module on a synthetic copy in torchvision's layout ------------------------------------
def _write_gtsrb(root: Path, per_class: int = 5, train: bool = False) -> dict[str, int]:
    """A tiny GTSRB: variable-size .ppm files whose colour encodes the class; returns file -> class."""
    images = root / "gtsrb" / "GTSRB" / "Final_Test" / "Images"
    images.mkdir(parents=True)
    truth = {}
    for i in range(43 * per_class):
        name, label = f"{i:05d}.ppm", (i * 7) % 43
        Image.new("RGB", (30 + i % 11, 33 + i % 5), (label * 5, 255 - label * 5, 100)).save(images / name)
        truth[name] = label
    with open(root / "gtsrb" / "GT-final_test.csv", "w", newline="") as f:
        writer = csv.writer(f, delimiter=";")
        writer.writerow(["Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"])
        for name, label in truth.items():
            writer.writerow([name, 0, 0, 0, 0, 0, 0, label])
    if train:
        for label in range(43):
            folder = root / "gtsrb" / "GTSRB" / "Training" / f"{label:05d}"
            folder.mkdir(parents=True)
            for j in range(3):
                Image.new("RGB", (40, 44), (label * 5, 255 - label * 5, 100)).save(folder / f"00000_{j:05d}.ppm")
    return truth


def test_module_reads_resizes_caches_and_equalises(tmp_path):
    truth = _write_gtsrb(tmp_path / "data")
    dm = GTSRBDataModule(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", download=False, equalize=False)
    dm.setup("test")
    images, labels = dm.splits["test"]
    assert images.shape == (43 * 5, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == list(truth.values())  # file order of the CSV, official ClassIds
    assert torch.equal(images[:, 0, 16, 16].long(), labels * 5)  # the colour survives the resize
    assert list((tmp_path / "cache" / "gtsrb").glob("*.pt"))
    # second load comes from the cache: break decoding to prove it
    import robustxai.data.gtsrb as gtsrb_module
    original = gtsrb_module.decode_split
    gtsrb_module.decode_split = lambda dataset: (_ for _ in ()).throw(AssertionError("decoded again"))
    try:
        again = GTSRBDataModule(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", download=False)
        again.setup("test")
    finally:
        gtsrb_module.decode_split = original
    assert torch.equal(again.splits["test"][0], equalize_hist(images))  # equalize=True (default) on top


def test_offline_split_is_stratified_and_disjoint(tmp_path):
    _write_gtsrb(tmp_path / "data", per_class=10)
    dm = GTSRBDataModule(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", download=False,
                         split="test_images", test_fraction=0.3)
    dm.setup()
    train_y, test_y = dm.splits["train"][1], dm.splits["test"][1]
    assert torch.bincount(test_y, minlength=43).tolist() == [3] * 43
    assert torch.bincount(train_y, minlength=43).tolist() == [7] * 43
    assert dm.val_dataloader() == []  # val_size 0 by default


def test_official_training_split_missing_is_a_clear_error(tmp_path):
    _write_gtsrb(tmp_path / "data")
    dm = GTSRBDataModule(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", download=False)
    with pytest.raises(DatasetError, match="data.split=test_images"):
        dm.setup("fit")
    dm.setup("test")  # the test split alone is fine


def test_no_download_into_a_read_only_data_directory(tmp_path):
    data = tmp_path / "data"
    _write_gtsrb(data)
    (data / "gtsrb").chmod(0o555)
    try:
        dm = GTSRBDataModule(data_dir=data, cache_dir=tmp_path / "cache", download=True)
        with pytest.raises(DatasetError, match="not writable"):
            dm.setup("fit")
    finally:
        (data / "gtsrb").chmod(0o755)
    assert not (data / "gtsrb" / "GTSRB" / "Training").exists()


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    import robustxai.data.gtsrb as gtsrb_module

    def offline(*args, download=False, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(gtsrb_module.datasets, "GTSRB", offline)
    dm = GTSRBDataModule(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", download=True)
    with pytest.raises(DatasetError, match=r"downloading GTSRB's test split .* failed \(OSError"):
        dm.setup("test")


def test_official_training_images_are_resized_and_shuffled(tmp_path):
    _write_gtsrb(tmp_path / "data", train=True)
    dm = GTSRBDataModule(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", download=False,
                         equalize=False, val_size=10)
    dm.setup("fit")
    train_x, train_y = dm.splits["train"]
    val_y = dm.splits["val"][1]
    assert train_x.shape == (43 * 3 - 10, 3, 32, 32) and len(val_y) == 10
    assert len(set(val_y.tolist())) > 5  # a random prefix, not the first class folder
    assert torch.equal(train_x[:, 0, 5, 5].long(), train_y * 5)


def test_augmented_module_is_balanced_and_cached(tmp_path):
    _write_gtsrb(tmp_path / "data", per_class=4)
    kwargs = dict(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", download=False, split="test_images",
                  test_fraction=0.25, augment=True, augment_per_class=6)
    dm = GTSRBDataModule(**kwargs)
    dm.setup("fit")
    images, labels = dm.splits["train"]
    assert torch.bincount(labels).tolist() == [6] * 43 and images.dtype == torch.uint8
    again = GTSRBDataModule(**kwargs)
    again.setup("fit")
    assert torch.equal(again.splits["train"][0], images)
    assert len(list((tmp_path / "cache" / "gtsrb").glob("*.pt"))) == 2  # decoded test set + augmented set


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="split"):
        GTSRBDataModule(split="train")
    with pytest.raises(ValueError, match="test_fraction"):
        GTSRBDataModule(test_fraction=0.0)
    assert len(GTSRB_CLASS_NAMES) == GTSRBDataModule.num_classes == 43


# -- the offline copy in ../shared/data ----------------------------------------------------------------
def test_offline_test_split_loads_with_official_labels():
    data = shared_dataset("gtsrb")
    with open(data / "gtsrb" / "GT-final_test.csv") as f:
        expected = [int(row["ClassId"]) for row in csv.DictReader(f, delimiter=";")]
    dm = GTSRBDataModule(data_dir=data, cache_dir=_cache(), download=False, test_subset=500)
    dm.setup("test")
    images, labels = dm.splits["test"]
    assert images.shape == (500, 3, 32, 32) and labels.tolist() == expected[:500]
    raw = np.asarray(Image.open(data / "gtsrb" / "GTSRB" / "Final_Test" / "Images" / "00003.ppm").convert("RGB"))
    cv2 = pytest.importorskip("cv2")
    reference = np.stack([cv2.equalizeHist(np.ascontiguousarray(raw[:, :, c])) for c in range(3)])
    assert np.array_equal(images[3].numpy(), reference)

    offline = GTSRBDataModule(data_dir=data, cache_dir=_cache(), download=False, split="test_images", equalize=False)
    offline.setup()
    train_y, test_y = offline.splits["train"][1], offline.splits["test"][1]
    assert len(train_y) + len(test_y) == len(expected) == 12630
    counts = torch.bincount(torch.tensor(expected), minlength=43)
    assert torch.equal(torch.bincount(test_y, minlength=43), torch.round(counts * 0.2).long())


def test_cli_trains_the_rar_resnet_on_offline_gtsrb(tmp_path):
    data = shared_dataset("gtsrb")
    run_dir = tmp_path / "run"
    run_cli("train", "data=gtsrb", "model=rar_resnet_gtsrb", "data.split=test_images", "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2", "trainer.accelerator=cpu", "data.test_subset=32",
            "data.eval_batch_size=32", "attack.pgd.steps=2", f"hydra.run.dir={run_dir}",
            env={"DATA_DIR": str(data), "ROBUSTXAI_CACHE": str(_cache())})
    metrics = results(run_dir)
    assert math.isfinite(metrics["train/loss"]) and 0 <= metrics["test/robust_acc/pgd"] <= metrics["test/acc"]
    assert metrics["test/max_linf/pgd"] <= 8 / 255 + 1e-6  # the dataset's threat model reached the attack
