"""Flower17: label and class-name mapping, the 72/8 split, decoding, caching, errors, and the real files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import robustxai.data.flower17 as flower17
from robustxai.data.flower17 import FLOWER17_CLASS_NAMES, Flower17DataModule, decode_resized, flower17_labels
from robustxai.errors import DatasetError
from tests.conftest import ROOT, results, run_cli, shared_dataset


def _cache() -> Path:
    return Path(os.environ.get("ROBUSTXAI_CACHE", ROOT / ".cache"))


def _label_of(n: int) -> int:
    return int(flower17_labels()[n - 1])


def test_labels_follow_the_official_order():
    labels = flower17_labels()
    assert labels.shape == (1360,) and torch.equal(torch.bincount(labels), torch.full((17,), 80))
    assert _label_of(1) == 0 and _label_of(80) == 0 and _label_of(81) == 1 and _label_of(1360) == 16
    assert FLOWER17_CLASS_NAMES[_label_of(721)] == "Sunflower"  # (721 - 1) // 80 = 9
    assert FLOWER17_CLASS_NAMES[_label_of(641)] == "Fritillary"  # the seed's name list calls this Windflower
    assert FLOWER17_CLASS_NAMES[_label_of(1)] == "Daffodil" and FLOWER17_CLASS_NAMES[_label_of(1360)] == "Pansy"
    assert len(set(FLOWER17_CLASS_NAMES)) == Flower17DataModule.num_classes == 17


def _write_flowers(root: Path) -> Path:
    """A tiny flat jpg/ folder; image_n.jpg is a solid colour encoding n (green: n mod 64, blue: n div 64).

    Stored losslessly (PNG bytes under the .jpg name; PIL decodes by content) so the colour code is exact.
    """
    folder = root / "flower17" / "jpg"
    folder.mkdir(parents=True)
    for n in range(1, 1361):
        colour = (128, (n % 64) * 4, (n // 64) * 10)
        Image.new("RGB", (12 + n % 5, 9 + n % 3), colour).save(folder / f"image_{n:04d}.jpg", format="PNG")
    return root


def _file_numbers(images: torch.Tensor) -> torch.Tensor:
    centre = images[:, :, 64, 64].float()
    return torch.round(centre[:, 1] / 4).long() + 64 * torch.round(centre[:, 2] / 10).long()


def _linked_copy(source: Path, target: Path, skip: tuple[int, ...] = ()) -> Path:
    """``target/flower17/jpg`` with symbolic links to the files of ``source`` (fast), minus ``skip``."""
    folder = target / "flower17" / "jpg"
    folder.mkdir(parents=True)
    for n in range(1, 1361):
        if n not in skip:
            name = f"image_{n:04d}.jpg"
            (folder / name).symlink_to(source / "flower17" / "jpg" / name)
    return target


@pytest.fixture(scope="module")
def fake_flowers(tmp_path_factory) -> Path:
    return _write_flowers(tmp_path_factory.mktemp("flowers"))


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def test_split_is_72_8_per_class_seeded_and_labels_match_the_files(fake_flowers, shared_cache):
    dm = Flower17DataModule(data_dir=fake_flowers, cache_dir=shared_cache, download=False)
    dm.setup()
    (train_x, train_y), (test_x, test_y) = dm.splits["train"], dm.splits["test"]
    assert train_x.shape == (1224, 3, 128, 128) and test_x.shape == (136, 3, 128, 128)
    assert train_x.dtype == torch.uint8
    assert torch.bincount(train_y).tolist() == [72] * 17 and torch.bincount(test_y).tolist() == [8] * 17
    train_n, test_n = _file_numbers(train_x), _file_numbers(test_x)
    assert torch.equal(torch.sort(torch.cat([train_n, test_n])).values, torch.arange(1, 1361))  # disjoint, complete
    assert torch.equal((train_n - 1) // 80, train_y) and torch.equal((test_n - 1) // 80, test_y)
    assert len(set(train_y[:17].tolist())) > 5  # shuffled: classes interleave
    same = Flower17DataModule(data_dir=fake_flowers, cache_dir=shared_cache, download=False)
    same.setup("test")
    assert torch.equal(same.splits["test"][0], test_x)
    other = Flower17DataModule(data_dir=fake_flowers, cache_dir=shared_cache, download=False, split_seed=1)
    other.setup("test")
    assert not torch.equal(_file_numbers(other.splits["test"][0]), test_n)


def test_decoded_images_are_cached(fake_flowers, shared_cache, monkeypatch):
    Flower17DataModule(data_dir=fake_flowers, cache_dir=shared_cache, download=False).setup("test")
    assert list((shared_cache / "flower17").glob("*.pt"))
    monkeypatch.setattr(flower17, "decode_resized", lambda path: (_ for _ in ()).throw(AssertionError("decoded")))
    Flower17DataModule(data_dir=fake_flowers, cache_dir=shared_cache, download=False).setup("test")


def test_missing_and_corrupt_files_are_clear_errors(fake_flowers, tmp_path):
    root = _linked_copy(fake_flowers, tmp_path / "missing", skip=(5, 700))
    dm = Flower17DataModule(data_dir=root, cache_dir=tmp_path / "cache", download=True)
    with pytest.raises(DatasetError, match=r"2 of the 1360 images are missing .*image_0005.jpg, image_0700.jpg"):
        dm.setup("test")
    corrupt = _linked_copy(fake_flowers, tmp_path / "corrupt", skip=(42,))
    (corrupt / "flower17" / "jpg" / "image_0042.jpg").write_bytes(b"not a jpeg")
    dm = Flower17DataModule(data_dir=corrupt, cache_dir=tmp_path / "cache", download=False)
    with pytest.raises(DatasetError, match="image_0042.jpg could not be decoded"):
        dm.setup("test")


def test_download_errors_name_the_url_and_the_fix(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(flower17, "download_and_extract_archive", fail)
    dm = Flower17DataModule(data_dir=tmp_path / "empty", cache_dir=tmp_path / "cache", download=True)
    with pytest.raises(DatasetError, match="17flowers.tgz"):
        dm.setup("test")
    with pytest.raises(DatasetError, match="1360 of the 1360 images are missing"):
        Flower17DataModule(data_dir=tmp_path / "empty", download=False).setup("test")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        with pytest.raises(DatasetError, match="not writable"):
            Flower17DataModule(data_dir=read_only, cache_dir=tmp_path / "cache", download=True).setup("test")
    finally:
        read_only.chmod(0o755)


def test_augmented_flowers_are_balanced(fake_flowers, shared_cache):
    dm = Flower17DataModule(data_dir=fake_flowers, cache_dir=shared_cache, download=False, augment=True,
                            augment_per_class=75, val_size=17)
    dm.setup("fit")
    train_y, val_y = dm.splits["train"][1], dm.splits["val"][1]
    assert len(val_y) == 17
    assert torch.equal(torch.bincount(train_y, minlength=17) + torch.bincount(val_y, minlength=17),
                       torch.full((17,), 75) + torch.bincount(val_y, minlength=17))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="train_per_class"):
        Flower17DataModule(train_per_class=80)


def test_real_images_decode_to_128x128():
    data = shared_dataset("flower17")
    path = data / "flower17" / "jpg" / "image_0721.jpg"
    image = decode_resized(path)
    assert image.shape == (3, 128, 128) and image.dtype == torch.uint8
    with Image.open(path) as full:
        full_mean = np.asarray(full.convert("RGB"), dtype=np.float64).mean(axis=(0, 1))
    assert np.abs(image.double().mean(dim=(1, 2)).numpy() - full_mean).max() < 3  # a resize keeps the colour mean


@pytest.mark.slow
def test_real_flower17_module_and_cli(tmp_path):
    data = shared_dataset("flower17")
    dm = Flower17DataModule(data_dir=data, cache_dir=_cache(), download=False)
    dm.setup()
    assert dm.splits["train"][0].shape == (1224, 3, 128, 128) and dm.splits["test"][0].shape == (136, 3, 128, 128)
    run_dir = tmp_path / "run"
    run_cli("train", "data=flower17", "model=rar_resnet_flower17", "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2", "trainer.accelerator=cpu", "data.test_subset=16",
            "data.eval_batch_size=16", "attack.pgd.steps=2", f"hydra.run.dir={run_dir}",
            env={"DATA_DIR": str(data), "ROBUSTXAI_CACHE": str(_cache())})
    assert results(run_dir)["test/max_linf/pgd"] <= 8 / 255 + 1e-6
