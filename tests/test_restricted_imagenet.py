"""Restricted ImageNet on a tiny generated ImageNet tree: class ranges, layouts, resizing, the streaming loader, configs."""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from robustxai.data.restricted_imagenet import (
    CLASS_NAMES,
    RestrictedImageNetDataModule,
    center_crop,
    random_crop,
    random_resized_crop_box,
    restricted_label,
    scan_split,
    seed_resize,
)
from robustxai.data.streaming import StreamingLoader
from robustxai.errors import DatasetError
from robustxai.tasks.common import build_datamodule, build_model
from robustxai.utils.config import instantiate, validate_config
from tests.conftest import compose_config

# ImageNet index -> super-class, written out by hand from the ranges (both ends and inside), and dropped neighbours
EXPECTED = {30: 2, 32: 2, 33: 3, 37: 3, 80: 4, 100: 4, 118: 7, 121: 7, 151: 0, 200: 0, 268: 0, 281: 1, 285: 1,
            300: 8, 319: 8, 365: 5, 382: 5, 389: 6, 397: 6}
DROPPED = (0, 29, 38, 79, 101, 117, 122, 150, 269, 280, 286, 299, 320, 364, 383, 388, 398, 999)
WNIDS = [f"n{10_000_000 + 7 * i:08d}" for i in range(1000)]  # sorted order = index order


def _write_image(path: Path, rng: np.random.Generator, mode: str = "RGB") -> None:
    h, w = int(rng.integers(12, 40)), int(rng.integers(12, 40))
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    array = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    Image.fromarray(array[..., 0] if mode == "L" else array, mode).save(path)


def make_tree(root: Path, per_class: int = 2, wnid_file: str | None = "wnids.txt", flat_val: bool = False) -> Path:
    """A tiny ImageNet root: ``per_class`` images in train/ and val/ for every index in EXPECTED and DROPPED."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for k, index in enumerate(sorted((*EXPECTED, *DROPPED))):
            folder = root / split / WNIDS[index]
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(per_class):
                mode = ("RGB", "L", "RGBA")[(k + j) % 3]
                _write_image(folder / f"{WNIDS[index]}_{j}.{'JPEG' if mode == 'RGB' else 'png'}", rng, mode)
    if wnid_file is not None:
        shuffled = WNIDS[:]
        random.Random(0).shuffle(shuffled)  # the list's order must not matter: the index is the sorted position
        (root / wnid_file).write_text("".join(f"{w} some class name\n" for w in shuffled))
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("data") / "imagenet")


def _index_of(path: str) -> int:
    return WNIDS.index(Path(path).parent.name)


# -- class ranges ----------------------------------------------------------------------------------------
def test_the_nine_inclusive_ranges_by_hand():
    labels = [restricted_label(i) for i in range(1000)]
    counts = [sum(label == c for label in labels) for c in range(9)]
    assert counts == [118, 5, 3, 5, 21, 18, 9, 4, 20] and sum(counts) == 203  # 268-151+1 dogs, ...
    assert all(restricted_label(i) == c for i, c in EXPECTED.items())
    assert all(restricted_label(i) is None for i in DROPPED)
    assert CLASS_NAMES == ("dog", "cat", "frog", "turtle", "bird", "primate", "fish", "crab", "insect")


@pytest.mark.parametrize("train", [True, False], ids=["train", "val"])
def test_the_tree_maps_to_the_nine_classes_by_sorted_wnid_index(tree, train):
    samples = scan_split(tree, train)
    assert len(samples) == 2 * len(EXPECTED)  # dropped classes are left out
    assert all(label == EXPECTED[_index_of(path)] for path, label in samples)
    assert [_index_of(p) for p, _ in samples] == sorted(_index_of(p) for p, _ in samples)


def test_a_torchvision_imagenet_root_with_meta_bin_and_a_flat_val_folder(tmp_path):
    root = make_tree(tmp_path / "imagenet", per_class=1, wnid_file=None)
    pairs = [(next(folder.iterdir()), folder.name) for folder in sorted((root / "val").iterdir())]
    random.Random(1).shuffle(pairs)  # file k's class is val_wnids[k], unrelated to the sorted class order
    val_wnids = []
    for k, (image, wnid) in enumerate(pairs):  # flatten val/ as the raw ILSVRC2012 archive has it
        image.rename(root / "val" / f"ILSVRC2012_val_{k + 1:08d}{image.suffix}")
        image.parent.rmdir()
        val_wnids.append(wnid)
    torch.save(({w: (f"class {w}",) for w in WNIDS}, val_wnids), root / "meta.bin")
    by_number = {int(Path(p).stem[-8:]) - 1: label for p, label in scan_split(root, train=False)}
    expected = {k: EXPECTED[WNIDS.index(w)] for k, w in enumerate(val_wnids) if WNIDS.index(w) in EXPECTED}
    assert by_number == expected and len(expected) == len(EXPECTED)
    assert len(scan_split(root, train=True)) == len(EXPECTED)  # train/<wnid>/ indexed by meta.bin's wnids


def test_all_thousand_class_folders_give_the_index_without_a_list(tmp_path):
    root = make_tree(tmp_path / "imagenet", per_class=1, wnid_file=None)
    with pytest.raises(DatasetError, match="cannot tell the ImageNet class index.*found no wnid list.*data.wnids="):
        scan_split(root, train=False)  # 37 class folders and no list: the index of a folder is unknown
    for w in WNIDS:
        (root / "train" / w).mkdir(exist_ok=True)
    for train in (True, False):  # train/ now names all 1,000 classes, which indexes val/ too
        samples = scan_split(root, train=train)
        assert len(samples) == len(EXPECTED) and all(label == EXPECTED[_index_of(p)] for p, label in samples)


def test_an_explicit_wnid_list_wins_and_bad_lists_or_folders_are_named(tmp_path, tree):
    listing = tmp_path / "LOC_synset_mapping.txt"
    listing.write_text("\n".join(f"{w} a name, another" for w in WNIDS))
    dm = RestrictedImageNetDataModule(root=str(tree), wnids=str(listing), order_seed=None, num_workers=0)
    assert dm.split_size("train") == 2 * len(EXPECTED)
    short = tmp_path / "short.txt"
    short.write_text("\n".join(WNIDS[:999]))
    with pytest.raises(DatasetError, match=r"short.txt has 999 entries \(999 distinct\).*each of the 1000"):
        scan_split(tree, True, short)
    other = tmp_path / "other.txt"
    other.write_text("\n".join(f"x{w}" for w in WNIDS))
    with pytest.raises(DatasetError, match=r"class folders that are not ImageNet wnids of .*other.txt: n1"):
        scan_split(tree, True, other)


def test_a_missing_imagenet_folder_names_the_directory_the_layout_and_that_it_cannot_be_downloaded(tmp_path):
    dm = RestrictedImageNetDataModule(data_dir=tmp_path, num_workers=0)
    with pytest.raises(DatasetError) as err:
        dm.setup("test")
    message = str(err.value)
    assert str(tmp_path / "imagenet") in message and "does not exist" in message
    assert "<root>/val/<wnid>/*.JPEG" in message and "meta.bin" in message
    assert "torchvision cannot download ImageNet" in message and "data.root=" in message
    (tmp_path / "imagenet" / "val").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"imagenet/train does not exist \(needed for the training split\)"):
        dm.setup("fit")


# -- resizing --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(375, 500), (224, 224), (97, 61), (600, 180), (17, 300), (1000, 999)])
def test_seed_resize_equals_cv2_resize_pixel_for_pixel(shape):
    image = np.random.default_rng(shape[0]).integers(0, 256, (*shape, 3), dtype=np.uint8)
    ours = seed_resize(torch.from_numpy(image).permute(2, 0, 1), 224).permute(1, 2, 0).numpy()
    oracle = cv2.resize(image, (224, 224), interpolation=cv2.INTER_LINEAR)
    assert ours.shape == oracle.shape == (224, 224, 3) and np.array_equal(ours, oracle)
    gray = image[..., :1]
    assert np.array_equal(seed_resize(torch.from_numpy(gray).permute(2, 0, 1), 32)[0].numpy(),
                          cv2.resize(gray, (32, 32), interpolation=cv2.INTER_LINEAR))


def test_the_dataset_decodes_gray_and_alpha_images_to_rgb_and_resizes_like_the_seed(tree):
    dm = RestrictedImageNetDataModule(root=str(tree), order_seed=None, num_workers=0)
    dm.setup("test")
    dataset = dm.views["test"][0]
    firsts = {}
    for index, (path, _) in enumerate(dataset.samples):
        firsts.setdefault(Image.open(path).mode, index)
    assert set(firsts) == {"RGB", "L", "RGBA"}  # JPEG, grayscale PNG, RGBA PNG
    for index in firsts.values():
        path, label = dataset.samples[index]
        image, got = dataset[index]
        rgb = np.asarray(Image.open(path).convert("RGB"))
        assert got == label and image.shape == (3, 224, 224) and image.dtype == torch.uint8
        assert torch.equal(image, seed_resize(torch.from_numpy(rgb.copy()).permute(2, 0, 1), 224))


def test_crop_mode_centre_view_equals_torchvision_resize_256_and_centre_crop_224():
    picture = Image.fromarray(np.random.default_rng(3).integers(0, 256, (300, 410, 3), dtype=np.uint8))
    oracle = TF.center_crop(TF.resize(picture, 256), 224)
    assert np.array_equal(np.asarray(center_crop(picture, 224)), np.asarray(oracle))


def test_crop_mode_random_view_is_a_function_of_its_seed():
    picture = Image.fromarray(np.random.default_rng(4).integers(0, 256, (60, 80, 3), dtype=np.uint8))
    view = lambda seed: np.asarray(random_crop(picture, torch.Generator().manual_seed(seed), 32))
    assert view(1).shape == (32, 32, 3) and np.array_equal(view(1), view(1)) and not np.array_equal(view(1), view(2))


@settings(max_examples=60, deadline=None)
@given(width=st.integers(1, 400), height=st.integers(1, 400), seed=st.integers(0, 2 ** 31))
def test_random_resized_crop_box_stays_inside_the_image(width, height, seed):
    left, top, w, h = random_resized_crop_box(width, height, torch.Generator().manual_seed(seed))
    assert 0 <= left and 0 <= top and 1 <= w and 1 <= h and left + w <= width and top + h <= height


# -- the streaming loader on the tree --------------------------------------------------------------------
def _dm(tree: Path, **kwargs) -> RestrictedImageNetDataModule:
    args = dict(root=str(tree), image_size=16, batch_size=5, num_workers=0, shuffle_seed=3, resize="crop")
    return RestrictedImageNetDataModule(**{**args, **kwargs})


def test_a_fixed_class_mixed_order_for_val_size_and_test_subset(tree):
    dm = _dm(tree, val_size=6, test_subset=9)
    assert (dm.split_size("train"), dm.split_size("val"), dm.split_size("test")) == (2 * 19 - 6, 6, 9)
    val_labels = dm.take("val", range(6))[1]
    assert len(set(val_labels.tolist())) > 1  # not the first class of the sorted list
    sorted_dm = _dm(tree, order_seed=None)
    assert sorted_dm.take("test", range(4))[1].tolist() == [2, 2, 2, 2]  # frogs (index 30, 32) come first
    x, y = dm.take("test", [8, 0])
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.equal(y, torch.tensor([dm.views["test"][0].samples[i][1] for i in (8, 0)]))
    assert dm.model_kwargs() == {"in_channels": 3, "num_classes": 9, "input_size": 16}


def test_training_batches_have_a_seeded_order_and_crops_and_shard_by_rank(tree):
    dm, twin = _dm(tree), _dm(tree, num_workers=2)
    dm.setup("fit"), twin.setup("fit")
    first, again = list(dm.train_dataloader()), list(twin.train_dataloader())
    assert len(first) == 8 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    dataset, positions = dm.views["train"]
    shards = [StreamingLoader(dataset, positions, batch_size=5, shuffle=True, seed=3, rank=r, world_size=2,
                              equal_shards=True).keys(0) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 19 and not set(shards[0]) & set(shards[1])
    crop_a = torch.cat([x for x, _ in first])
    plain = _dm(tree, resize="seed")
    plain.setup("fit")
    crop_b = torch.cat([x for x, _ in plain.train_dataloader()])
    assert not torch.equal(crop_a, crop_b)  # crops differ from the seed's straight resize


def test_the_streaming_loader_resumes_mid_epoch_with_the_same_pixels(tree):
    dm = _dm(tree)
    dm.setup("fit")
    loader = dm.train_dataloader()
    full = list(loader)
    it = iter(loader)
    next(it), next(it), next(it)
    state = loader.state_dict()
    fresh = _dm(tree, num_workers=2)
    fresh.setup("fit")
    resumed = fresh.train_dataloader()
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert state == {"epoch": 0, "batches": 3} and len(rest) == len(full) - 3
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(rest, full[3:]))


# -- configs ---------------------------------------------------------------------------------------------
def _compose(config: str, overrides: list[str], tmp_path: Path):
    return compose_config(config, overrides, tmp_path)


def test_the_restricted_imagenet_configs_compose_and_build_without_data(tmp_path):
    cfg = _compose("train", ["data=restricted_imagenet", "method=pgd_at", "data.resize=crop"], tmp_path)
    validate_config(cfg)
    assert (cfg.threat.linf.eps, cfg.threat.linf.step_size, cfg.threat.linf.steps) == (0.003, 0.1, 7)
    dm = build_datamodule(cfg)
    model = build_model(cfg, dm)  # model_kwargs needs no ImageNet on disk
    assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 9)
    assert dm.resize == "crop" and dm.root == (tmp_path / "data" / "imagenet").resolve()
    bad = _compose("train", ["data=restricted_imagenet", "data.resize=squash"], tmp_path)
    with pytest.raises(ValueError, match="data.resize.*'seed', 'crop'"):
        validate_config(bad)


def test_cifar10_threat_has_an_explanation_block_so_topk_composes(tmp_path):
    cfg = _compose("eval", ["ckpt_path=x.ckpt", "attack=topk", "data=cifar10"], tmp_path)
    assert "woods" not in cfg.threat
    assert cfg.threat.explanation.eps == pytest.approx(8 / 255) and cfg.attack.topk.steps == 50
    attack = instantiate(cfg.attack.topk, "attack.topk")
    assert attack.eps == pytest.approx(8 / 255)
