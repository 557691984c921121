"""Oxford 17 Category Flowers at 128x128 with the RAR seed's per-class 72/8 split (seed_rar.md 5.4).

Reads the flat ``DATA_DIR/flower17/jpg/image_0001.jpg ... image_1360.jpg`` folder of the official
``17flowers.tgz`` (downloaded there when asked), decodes and resizes once, and caches the tensors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.datasets.utils import download_and_extract_archive

from robustxai.data.augment import augment_training_split
from robustxai.data.base import TensorDataModule
from robustxai.data.cache import cached_tensors, files_fingerprint, is_writable_dir
from robustxai.data.splits import split_per_class
from robustxai.errors import DatasetError
from robustxai.utils.validation import check_range

URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/17/17flowers.tgz"
NUM_IMAGES, PER_CLASS, SIZE = 1360, 80, 128
DECODE_VERSION = 1  # bump when the decoding/resizing recipe changes (invalidates caches)

# The official order (label = (n - 1) // 80 for image_n.jpg), NOT the seed's string-sorted folder order.
FLOWER17_CLASS_NAMES = (
    "Daffodil", "Snowdrop", "Lily Valley", "Bluebell", "Crocus", "Iris", "Tigerlily", "Tulip", "Fritillary",
    "Sunflower", "Daisy", "Colts' Foot", "Dandelion", "Cowslip", "Buttercup", "Windflower", "Pansy",
)


def image_files(data_dir: Path) -> list[Path]:
    """The 1,360 expected files ``flower17/jpg/image_0001.jpg`` ... ``image_1360.jpg``, in label order."""
    folder = data_dir / "flower17" / "jpg"
    return [folder / f"image_{n:04d}.jpg" for n in range(1, NUM_IMAGES + 1)]


def flower17_labels() -> Tensor:
    """Official labels of image_1..image_1360: ``(n - 1) // 80``, i.e. 80 consecutive images per class."""
    return torch.arange(NUM_IMAGES) // PER_CLASS


def _download(data_dir: Path) -> None:
    """Fetch and unpack the official 17flowers.tgz into ``data_dir/flower17`` (creates ``jpg/``)."""
    root = data_dir / "flower17"
    if not is_writable_dir(root):
        raise DatasetError(f"Flower17 is not in {root / 'jpg'} and {root} is not writable, so it was not "
                           f"downloaded. Point DATA_DIR at a writable directory (or one that holds flower17/jpg/).")
    try:
        download_and_extract_archive(URL, download_root=str(root), filename="17flowers.tgz")
    except Exception as err:  # network errors come in many types
        raise DatasetError(f"downloading Flower17 from {URL} into {root} failed ({type(err).__name__}: {err}). "
                           f"Download 17flowers.tgz yourself and unpack it there (it creates jpg/), or set "
                           f"DATA_DIR to a directory that holds flower17/jpg/.") from err


def check_files(data_dir: Path, download: bool) -> list[Path]:
    """The image paths, after downloading them if asked; a DatasetError names what is missing."""
    files = image_files(data_dir)
    missing = [f for f in files if not f.is_file()]
    if len(missing) == NUM_IMAGES and download:
        _download(data_dir)
        missing = [f for f in files if not f.is_file()]
    if missing:
        names = ", ".join(f.name for f in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DatasetError(f"Flower17: {len(missing)} of the {NUM_IMAGES} images are missing from "
                           f"{files[0].parent} ({names}). Set DATA_DIR to the directory that holds flower17/jpg/ "
                           f"(the unpacked official 17flowers.tgz), or allow data.download=true with network access.")
    return files


def decode_resized(path: Path, size: int = SIZE) -> Tensor:
    """One image as uint8 ``(3, size, size)``: RGB, resized ignoring the aspect ratio with PIL's Lanczos filter.

    The seed used PIL's ``ANTIALIAS``, which is ``Image.LANCZOS``.
    """
    try:
        with Image.open(path) as picture:
            resized = picture.convert("RGB").resize((size, size), Image.LANCZOS)
    except Exception as err:
        raise DatasetError(f"Flower17 image {path} could not be decoded ({type(err).__name__}: {err}); "
                           f"replace it with an intact copy from 17flowers.tgz.") from err
    return torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1)


def load_flower17(data_dir: Path, download: bool, cache_dir: Path) -> tuple[Tensor, Tensor]:
    """All 1,360 images as uint8 ``(1360, 3, 128, 128)`` and their labels, decoded once and cached."""
    files = check_files(data_dir, download)

    def build() -> dict[str, Tensor]:
        return {"images": torch.stack([decode_resized(f) for f in files]), "labels": flower17_labels()}

    key = {"dataset": "flower17", "files": files_fingerprint(files), "size": SIZE, "resize": "PIL.LANCZOS",
           "version": DECODE_VERSION}
    tensors = cached_tensors(cache_dir, "flower17", key, build)
    return tensors["images"], tensors["labels"]


class Flower17DataModule(TensorDataModule):
    """Oxford Flowers 17, 3x128x128 in [0, 1]; per class, the first ``train_per_class`` images after a
    seeded shuffle train and the rest test (72/8: 1,224 train, 136 test, as the seed).

    ``augment=true`` adds the seed's offline augmentation: every training class balanced to
    ``augment_per_class`` images (1,000: 17,000 images, 836 MB as uint8; cached).
    """

    num_classes = 17
    input_shape = (3, SIZE, SIZE)
    class_names = FLOWER17_CLASS_NAMES

    def __init__(self, data_dir: str | Path = "data", batch_size: int = 16, eval_batch_size: int | None = None,
                 val_size: int = 0, test_subset: int | None = None, download: bool = True, shuffle_seed: int = 0,
                 cache_dir: str | Path | None = None, split_seed: int = 4557077, train_per_class: int = 72,
                 augment: bool = False, augment_per_class: int = 1000, augment_seed: int = 12312) -> None:
        super().__init__(data_dir=data_dir, batch_size=batch_size, eval_batch_size=eval_batch_size,
                         val_size=val_size, test_subset=test_subset, download=download,
                         shuffle_seed=shuffle_seed, cache_dir=cache_dir)
        check_range("train_per_class", train_per_class, low=1, high=PER_CLASS - 1)
        check_range("augment_per_class", augment_per_class, low=1)
        self.split_seed = split_seed
        self.train_per_class = train_per_class
        self.augment = augment
        self.augment_per_class = augment_per_class
        self.augment_seed = augment_seed

    def _split(self, train: bool) -> tuple[Tensor, Tensor]:
        images, labels = load_flower17(self.data_dir, self.download, self.cache_dir)
        first = torch.full((self.num_classes,), self.train_per_class)
        train_idx, test_idx = split_per_class(labels, first, self.split_seed)
        idx = train_idx if train else test_idx
        return images[idx], labels[idx]

    def _augmented(self) -> tuple[Tensor, Tensor]:
        """The class-balanced training split (built once, then read from the cache)."""
        def build() -> dict[str, Tensor]:
            images, labels = self._split(train=True)
            images, labels = augment_training_split(images, labels, self.val_size, self.augment_per_class,
                                                    self.augment_seed, self.num_classes)
            return {"images": images, "labels": labels}

        key = {"dataset": "flower17-augmented", "split_seed": self.split_seed, "train_per_class": self.train_per_class,
               "val_size": self.val_size, "per_class": self.augment_per_class, "seed": self.augment_seed,
               "files": files_fingerprint(image_files(self.data_dir)), "version": DECODE_VERSION}
        tensors = cached_tensors(self.cache_dir, "flower17", key, build)
        return tensors["images"], tensors["labels"]

    def load(self, train: bool) -> tuple[Tensor, Tensor]:
        if train and self.augment:
            check_files(self.data_dir, self.download)
            return self._augmented()
        return self._split(train)


__all__ = ["FLOWER17_CLASS_NAMES", "Flower17DataModule", "flower17_labels", "load_flower17"]
