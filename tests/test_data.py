"""Data modules: shapes and splits, offline MNIST, clear errors for missing or corrupt files, loaders."""

from __future__ import annotations

import shutil

import pytest
import torch

from robustxai.data import DatasetError, DigitsDataModule, FashionMNISTDataModule, MNISTDataModule, TensorLoader
from tests.conftest import shared_dataset


def test_digits_is_mnist_shaped_and_split():
    dm = DigitsDataModule(val_size=100)
    dm.setup()
    x_train, y_train = dm.splits["train"]
    x_test, _ = dm.splits["test"]
    assert x_train.shape[1:] == (1, 28, 28) and len(x_train) == 1797 - 360 - 100 and len(x_test) == 360
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0 and set(y_train.tolist()) == set(range(10))
    assert x_train[:, :, :3].abs().max() == 0  # the digit sits inside MNIST's 20x20 centre box


@pytest.mark.parametrize("cls, name, n_train", [(MNISTDataModule, "MNIST", 60000),
                                                (FashionMNISTDataModule, "FashionMNIST", 60000)])
def test_offline_mnist_from_read_only_gz_files(cls, name, n_train, tmp_path):
    data_dir = shared_dataset(name)
    before = sorted(p.name for p in (data_dir / name / "raw").iterdir())
    dm = cls(data_dir=data_dir, cache_dir=tmp_path, val_size=5000, test_subset=123)
    dm.setup()
    assert len(dm.splits["train"][1]) == n_train - 5000 and len(dm.splits["val"][1]) == 5000
    assert dm.splits["test"][0].shape == (123, 1, 28, 28) and dm.splits["test"][0].dtype == torch.uint8
    assert sorted(p.name for p in (data_dir / name / "raw").iterdir()) == before  # nothing written there
    x, _ = next(iter(dm.test_dataloader()))
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


def test_missing_dataset_names_directory_and_files(tmp_path):
    with pytest.raises(DatasetError, match=r"MNIST/raw must hold train-images-idx3-ubyte.gz.*Set DATA_DIR"):
        MNISTDataModule(data_dir=tmp_path, download=False).setup("test")


def test_failed_download_names_directory(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr("torchvision.datasets.MNIST.download", offline)
    with pytest.raises(DatasetError, match="downloading it failed.*network unreachable"):
        MNISTDataModule(data_dir=tmp_path, download=True).setup("test")


def test_corrupt_file_is_reported(tmp_path):
    source = shared_dataset("MNIST") / "MNIST" / "raw"
    raw = tmp_path / "data" / "MNIST" / "raw"
    shutil.copytree(source, raw)
    victim = raw / "t10k-images-idx3-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:1000])
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz is corrupt"):
        MNISTDataModule(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache").setup("test")


def test_truncated_uncompressed_file_is_reported(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        MNISTDataModule(data_dir=tmp_path, download=False).setup("test")


def _loader(n: int, **kwargs) -> TensorLoader:
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1)
    return TensorLoader(images, torch.arange(n), **kwargs)


def test_loader_shuffles_per_epoch_reproducibly():
    epoch = {"n": 0}
    loader = _loader(10, batch_size=4, shuffle=True, seed=7, epoch_fn=lambda: epoch["n"])
    first = torch.cat([y for _, y in loader])
    again = torch.cat([y for _, y in loader])
    epoch["n"] = 1
    second = torch.cat([y for _, y in loader])
    assert torch.equal(first, again) and not torch.equal(first, second)
    assert sorted(first.tolist()) == list(range(10)) and len(loader) == 3


def test_eval_shards_cover_every_example_once():
    seen = torch.cat([y for rank in range(3) for _, y in _loader(11, batch_size=2, rank=rank, world_size=3)])
    assert sorted(seen.tolist()) == list(range(11))


def test_train_shards_have_equal_length_and_are_disjoint():
    shards = [torch.cat([y for _, y in _loader(11, batch_size=2, shuffle=True, rank=r, world_size=2,
                                                equal_shards=True)]) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 5
    assert not set(shards[0].tolist()) & set(shards[1].tolist())


def test_uint8_images_are_scaled_to_unit_box():
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1)
    x, _ = next(iter(TensorLoader(images, torch.zeros(2, dtype=torch.long), batch_size=2)))
    assert x.dtype == torch.float32 and x.flatten().tolist() == [0.0, 1.0]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        DigitsDataModule(batch_size=0)
    with pytest.raises(ValueError, match="val_size=2000 leaves no training images"):
        DigitsDataModule(val_size=2000).setup("fit")


def test_loader_state_resumes_mid_epoch_at_the_next_batch():
    epoch = {"n": 2}
    loader = _loader(10, batch_size=3, shuffle=True, seed=1, epoch_fn=lambda: epoch["n"])
    full = [y for _, y in loader]
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches": 2}
    fresh = _loader(10, batch_size=3, shuffle=True, seed=1, epoch_fn=lambda: epoch["n"])
    fresh.load_state_dict(state)
    rest = [y for _, y in fresh]
    assert len(rest) == 2 and all(torch.equal(a, b) for a, b in zip(rest, full[2:]))
    assert len([y for _, y in fresh]) == 4  # the skip applies to the resumed pass only
