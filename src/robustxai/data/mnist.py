"""MNIST and Fashion-MNIST (torchvision datasets), offline from ``DATA_DIR`` or downloaded."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import torch
from torch import Tensor
from torchvision import datasets
from torchvision.datasets.utils import check_integrity

from robustxai.data.base import TensorDataModule
from robustxai.data.cache import default_cache_dir
from robustxai.errors import DatasetError


def _raw_files(dataset_cls: type[datasets.MNIST]) -> list[tuple[str, str]]:
    """The ``(gz file name, md5)`` pairs torchvision expects in ``<root>/<Name>/raw``."""
    return [(name, md5) for name, md5 in dataset_cls.resources]


def _extract_into_cache(raw_dir: Path, cache_raw: Path, files: list[tuple[str, str]]) -> None:
    """Check the md5 of every ``.gz`` and decompress it into the cache (never into ``raw_dir``)."""
    cache_raw.mkdir(parents=True, exist_ok=True)
    for name, md5 in files:
        gz = raw_dir / name
        if not check_integrity(str(gz), md5):
            raise DatasetError(
                f"{gz} is corrupt (its md5 is not {md5}). Replace it with an intact copy of the "
                f"official file, or delete it and let torchvision download it (data.download=true)."
            )
        target = cache_raw / name[: -len(".gz")]
        if target.exists():
            continue
        tmp = target.with_suffix(".tmp")
        with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, target)


def load_mnist_like(dataset_cls: type[datasets.MNIST], data_dir: Path, train: bool, download: bool,
                    cache_dir: Path | None) -> tuple[Tensor, Tensor]:
    """Load a split of an MNIST-format dataset as uint8 images ``(N, 1, 28, 28)`` and labels.

    Looks, in order, for torchvision's uncompressed files in ``data_dir``, then for the official
    ``.gz`` files (checked by md5 and decompressed into the cache, so ``data_dir`` may be read-only),
    then downloads with torchvision when ``download`` is true.
    """
    name = dataset_cls.__name__
    raw_dir = data_dir / name / "raw"
    files = _raw_files(dataset_cls)
    expected = ", ".join(f for f, _ in files)
    try:
        if all((raw_dir / f[: -len(".gz")]).exists() for f, _ in files):
            ds = dataset_cls(root=str(data_dir), train=train, download=False)
        elif all((raw_dir / f).exists() for f, _ in files):
            cache_root = (cache_dir or default_cache_dir()) / "torchvision"
            _extract_into_cache(raw_dir, cache_root / name / "raw", files)
            ds = dataset_cls(root=str(cache_root), train=train, download=False)
        elif download:
            try:
                ds = dataset_cls(root=str(data_dir), train=train, download=True)
            except Exception as err:  # network errors come in many types
                raise DatasetError(
                    f"{name} is not in {raw_dir} and downloading it failed ({type(err).__name__}: {err}). "
                    f"Put the files {expected} there (or set DATA_DIR to a directory that has "
                    f"{name}/raw/), or retry with network access."
                ) from err
        else:
            raise DatasetError(
                f"{name} not found: {raw_dir} must hold {expected} (or their uncompressed versions). "
                f"Set DATA_DIR to the directory that contains {name}/raw/, or allow data.download=true."
            )
    except DatasetError:
        raise
    except Exception as err:
        raise DatasetError(f"could not read {name} from {raw_dir}: {type(err).__name__}: {err}. "
                           f"The files may be truncated or corrupt; replace them with intact copies.") from err
    images = ds.data.unsqueeze(1).contiguous()
    labels = ds.targets.to(torch.int64)
    if images.dtype != torch.uint8 or images.shape[1:] != (1, 28, 28) or len(images) != len(labels):
        raise DatasetError(f"{name} in {raw_dir} has unexpected contents: images {tuple(images.shape)} "
                           f"{images.dtype}, {len(labels)} labels; replace the files with intact copies.")
    return images, labels


class MNISTDataModule(TensorDataModule):
    """MNIST: 28x28 grey digits in [0, 1]; the RAR setting holds out the first 5,000 training images."""

    num_classes = 10
    input_shape = (1, 28, 28)
    class_names = tuple(str(i) for i in range(10))
    dataset_cls: type[datasets.MNIST] = datasets.MNIST

    def load(self, train: bool) -> tuple[Tensor, Tensor]:
        return load_mnist_like(self.dataset_cls, self.data_dir, train, self.download, self.cache_dir)


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST: 28x28 grey clothing images in [0, 1], same layout and split as MNIST."""

    class_names = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    dataset_cls = datasets.FashionMNIST
