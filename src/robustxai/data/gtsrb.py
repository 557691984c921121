"""GTSRB (German traffic signs, 43 classes) at 32x32, with the RAR seed's histogram equalisation.

Images are read with ``torchvision.datasets.GTSRB`` from ``DATA_DIR/gtsrb`` (or downloaded there),
resized whole to 32x32 when they are not already, and cached decoded in the cache directory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision import datasets
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from robustxai.data.augment import augment_training_split
from robustxai.data.base import TensorDataModule
from robustxai.data.cache import cached_tensors, files_fingerprint, is_writable_dir
from robustxai.data.equalize import equalize_hist
from robustxai.data.splits import fraction_per_class, split_per_class
from robustxai.errors import DatasetError
from robustxai.utils.validation import check_choice, check_range

SIZE = 32
DECODE_VERSION = 1  # bump when the decoding/resizing recipe changes (invalidates caches)
SPLITS = ("official", "test_images")

GTSRB_CLASS_NAMES = (
    "Speed limit (20km/h)", "Speed limit (30km/h)", "Speed limit (50km/h)", "Speed limit (60km/h)",
    "Speed limit (70km/h)", "Speed limit (80km/h)", "End of speed limit (80km/h)", "Speed limit (100km/h)",
    "Speed limit (120km/h)", "No passing", "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection", "Priority road", "Yield", "Stop", "No vehicles",
    "Vehicles over 3.5 metric tons prohibited", "No entry", "General caution", "Dangerous curve to the left",
    "Dangerous curve to the right", "Double curve", "Bumpy road", "Slippery road", "Road narrows on the right",
    "Road work", "Traffic signals", "Pedestrians", "Children crossing", "Bicycles crossing",
    "Beware of ice/snow", "Wild animals crossing", "End of all speed and passing limits", "Turn right ahead",
    "Turn left ahead", "Ahead only", "Go straight or right", "Go straight or left", "Keep right", "Keep left",
    "Roundabout mandatory", "End of no passing", "End of no passing by vehicles over 3.5 metric tons",
)


def _image_folder(data_dir: Path, split: str) -> Path:
    """Where torchvision's GTSRB keeps the images of ``split`` ('train' or 'test')."""
    return data_dir / "gtsrb" / "GTSRB" / ("Training" if split == "train" else "Final_Test/Images")


def _source_files(data_dir: Path, split: str) -> list[Path]:
    """The image files (and, for the test split, the label CSV) a split is read from, sorted."""
    files = sorted(_image_folder(data_dir, split).rglob("*.ppm"))
    if split == "test":
        files.append(data_dir / "gtsrb" / "GT-final_test.csv")
    return files


def _missing_message(data_dir: Path, split: str) -> str:
    if split == "train":
        return (f"GTSRB's official training split is not in {_image_folder(data_dir, 'train')} (the offline copy "
                f"in shared/data holds only the 12,630 test images). Either get it: data.download=true with "
                f"network access and a writable DATA_DIR (torchvision downloads GTSRB-Training_fixed.zip, about "
                f"263 MB, into DATA_DIR/gtsrb), or train offline on the seeded stratified split of the test images "
                f"with data.split=test_images.")
    return (f"GTSRB's test split is not in {data_dir / 'gtsrb'} (expected GT-final_test.csv and "
            f"GTSRB/Final_Test/Images/*.ppm, torchvision's layout). Set DATA_DIR to the directory that holds "
            f"gtsrb/, or allow data.download=true with network access and a writable DATA_DIR.")


def _open_dataset(data_dir: Path, split: str, download: bool) -> datasets.GTSRB:
    """torchvision's GTSRB for ``split``, downloading it into ``data_dir`` only when asked and allowed."""
    folder = _image_folder(data_dir, split)
    csv = data_dir / "gtsrb" / "GT-final_test.csv"
    present = folder.is_dir() and (split == "train" or csv.exists())
    if not present:
        if not download:
            raise DatasetError(_missing_message(data_dir, split))
        if not is_writable_dir(data_dir / "gtsrb"):
            raise DatasetError(_missing_message(data_dir, split) + f" ({data_dir} is not writable, so nothing "
                               f"was downloaded: point DATA_DIR at a writable directory to download.)")
        try:
            return datasets.GTSRB(root=str(data_dir), split=split, download=True)
        except Exception as err:  # network errors come in many types
            raise DatasetError(f"downloading GTSRB's {split} split into {data_dir / 'gtsrb'} failed "
                               f"({type(err).__name__}: {err}). " + _missing_message(data_dir, split)) from err
    try:
        return datasets.GTSRB(root=str(data_dir), split=split, download=False)
    except Exception as err:
        raise DatasetError(f"could not index GTSRB's {split} split in {data_dir / 'gtsrb'} "
                           f"({type(err).__name__}: {err}); replace the files with intact copies.") from err


def to_32x32(image: Tensor) -> Tensor:
    """Resize a whole uint8 ``(3, H, W)`` image to 32x32 (bilinear, no antialiasing, as ``cv2.resize``)."""
    if image.shape[-2:] == (SIZE, SIZE):
        return image
    return TF.resize(image, [SIZE, SIZE], interpolation=InterpolationMode.BILINEAR, antialias=False)


def decode_split(dataset: datasets.GTSRB) -> dict[str, Tensor]:
    """Decode every image of a torchvision GTSRB to uint8 ``(N, 3, 32, 32)`` with int64 labels."""
    images = torch.empty(len(dataset), 3, SIZE, SIZE, dtype=torch.uint8)
    labels = torch.empty(len(dataset), dtype=torch.int64)
    for i in range(len(dataset)):  # one-off, variable-size files; the result is cached
        try:
            picture, label = dataset[i]
        except Exception as err:
            raise DatasetError(f"GTSRB image #{i} in {dataset.root} could not be read ({type(err).__name__}: "
                               f"{err}); replace the file with an intact copy.") from err
        images[i] = to_32x32(torch.from_numpy(np.asarray(picture, dtype=np.uint8).copy()).permute(2, 0, 1))
        labels[i] = label
    if len(labels) and (labels.min() < 0 or labels.max() >= len(GTSRB_CLASS_NAMES)):
        raise DatasetError(f"GTSRB labels in {dataset.root} lie outside 0..42; the label files are corrupt.")
    return {"images": images, "labels": labels}


def load_gtsrb_split(data_dir: Path, split: str, download: bool, cache_dir: Path) -> tuple[Tensor, Tensor]:
    """The official ``split`` ('train' or 'test') as uint8 32x32 images and labels, decoded once and cached."""
    dataset = _open_dataset(data_dir, split, download)
    files = _source_files(data_dir, split)
    if len(dataset) == 0:
        raise DatasetError(f"GTSRB's {split} split in {data_dir / 'gtsrb'} has no images. " +
                           _missing_message(data_dir, split))
    key = {"dataset": "gtsrb", "split": split, "n": len(dataset), "files": files_fingerprint(files),
           "size": SIZE, "version": DECODE_VERSION}
    tensors = cached_tensors(cache_dir, "gtsrb", key, lambda: decode_split(dataset))
    return tensors["images"], tensors["labels"]


class GTSRBDataModule(TensorDataModule):
    """GTSRB, 43 classes, 3x32x32 served in [0, 1] after per-channel histogram equalisation (seed 5.3).

    ``split='official'`` trains on GTSRB's training images (download them; not in the offline copy)
    and tests on the 12,630 official test images. ``split='test_images'`` works offline: a seeded,
    per-class stratified split of the test images (``test_fraction`` of each class for testing, the
    rest for training). ``augment=true`` adds the seed's offline augmentation, balancing every class
    of the training split to ``augment_per_class`` images (cached; 430k images = 1.3 GB as uint8).
    """

    num_classes = 43
    input_shape = (3, SIZE, SIZE)
    class_names = GTSRB_CLASS_NAMES

    def __init__(self, data_dir: str | Path = "data", batch_size: int = 64, eval_batch_size: int | None = None,
                 val_size: int = 0, test_subset: int | None = None, download: bool = True, shuffle_seed: int = 0,
                 cache_dir: str | Path | None = None, split: str = "official", split_seed: int = 4557077,
                 test_fraction: float = 0.2, equalize: bool = True, augment: bool = False,
                 augment_per_class: int = 10000, augment_seed: int = 12312) -> None:
        super().__init__(data_dir=data_dir, batch_size=batch_size, eval_batch_size=eval_batch_size,
                         val_size=val_size, test_subset=test_subset, download=download,
                         shuffle_seed=shuffle_seed, cache_dir=cache_dir)
        check_choice("split", split, SPLITS)
        check_range("test_fraction", test_fraction, low=0.0, high=1.0, low_open=True)
        check_range("augment_per_class", augment_per_class, low=1)
        self.split = split
        self.split_seed = split_seed
        self.test_fraction = test_fraction
        self.equalize = equalize
        self.augment = augment
        self.augment_per_class = augment_per_class
        self.augment_seed = augment_seed

    def _raw_split(self, train: bool) -> tuple[Tensor, Tensor]:
        """The un-equalised uint8 images and labels of the requested split, before augmentation."""
        if self.split == "official":
            images, labels = load_gtsrb_split(self.data_dir, "train" if train else "test", self.download, self.cache_dir)
            if train:  # torchvision lists training images class by class: shuffle so a val prefix is random
                order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.split_seed))
                images, labels = images[order], labels[order]
            return images, labels
        images, labels = load_gtsrb_split(self.data_dir, "test", self.download, self.cache_dir)
        per_class = fraction_per_class(labels, self.test_fraction, self.num_classes)
        test_idx, train_idx = split_per_class(labels, per_class, self.split_seed)
        idx = train_idx if train else test_idx
        return images[idx], labels[idx]

    def _augmented(self) -> tuple[Tensor, Tensor]:
        """The equalised, class-balanced training split (built once, then read from the cache)."""
        def build() -> dict[str, Tensor]:
            images, labels = self._raw_split(train=True)
            images, labels = augment_training_split(images, labels, self.val_size, self.augment_per_class,
                                                    self.augment_seed, self.num_classes)
            return {"images": equalize_hist(images) if self.equalize else images, "labels": labels}

        source = _source_files(self.data_dir, "train" if self.split == "official" else "test")
        key = {"dataset": "gtsrb-augmented", "split": self.split, "split_seed": self.split_seed,
               "test_fraction": self.test_fraction if self.split == "test_images" else None,
               "val_size": self.val_size, "per_class": self.augment_per_class, "seed": self.augment_seed,
               "equalize": self.equalize, "files": files_fingerprint(source), "version": DECODE_VERSION}
        tensors = cached_tensors(self.cache_dir, "gtsrb", key, build)
        return tensors["images"], tensors["labels"]

    def load(self, train: bool) -> tuple[Tensor, Tensor]:
        if train and self.augment:
            return self._augmented()
        images, labels = self._raw_split(train)
        return (equalize_hist(images) if self.equalize else images), labels


__all__ = ["GTSRB_CLASS_NAMES", "GTSRBDataModule", "load_gtsrb_split"]
