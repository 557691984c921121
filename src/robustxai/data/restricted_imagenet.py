"""Restricted ImageNet: 9 super-classes of ImageNet (Tsipras et al. 2019), streamed from an ImageNet folder tree.

A class folder ``<wnid>`` has the ImageNet index of ``wnid`` in the sorted list of the 1,000 wnids;
the super-class is the position of the inclusive index range holding it (MadryLab/robustness
``RESTRICTED_IMAGNET_RANGES``; spec seed_boopathy.md section 5, anchors.md 2.6); other classes are
dropped. The Boopathy et al. seed resizes every image straight to 224x224 (``cv2.resize``, bilinear,
no crop, no augmentation; reproduced bit for bit without OpenCV); ``resize="crop"`` gives the usual ImageNet crops instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from robustxai.data.streaming import StreamingDataModule, StreamingDataset
from robustxai.errors import DatasetError
from robustxai.utils.validation import check_choice, check_range

log = logging.getLogger(__name__)

# (first, last) ImageNet class index of each super-class, both inclusive; label = position in this tuple
RESTRICTED_IMAGENET_RANGES = ((151, 268), (281, 285), (30, 32), (33, 37), (80, 100), (365, 382), (389, 397),
                              (118, 121), (300, 319))
CLASS_NAMES = ("dog", "cat", "frog", "turtle", "bird", "primate", "fish", "crab", "insect")
NUM_IMAGENET_CLASSES = 1000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # ImageFolder's
WNID_FILES = ("LOC_synset_mapping.txt", "wnids.txt")  # looked for in the ImageNet root
Resize = Literal["seed", "crop"]
LAYOUT = ("the torchvision ImageFolder layout <root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG, or the root "
          "prepared by torchvision.datasets.ImageNet (train/, val/ and meta.bin)")


def restricted_label(imagenet_index: int) -> int | None:
    """The super-class of an ImageNet class index (0..999), or None for a dropped class."""
    for label, (first, last) in enumerate(RESTRICTED_IMAGENET_RANGES):
        if first <= imagenet_index <= last:
            return label
    return None


def restricted_classes(wnids: list[str]) -> dict[str, int]:
    """``{wnid: super-class}`` for the wnids of the 9 ranges, given the 1,000 ImageNet wnids (any order)."""
    ordered = sorted(wnids)
    return {wnid: label for index, wnid in enumerate(ordered) if (label := restricted_label(index)) is not None}


def _missing_root(root: Path, what: str) -> DatasetError:
    return DatasetError(
        f"Restricted ImageNet: {what}. Expected {LAYOUT}, with <root> = {root}. torchvision cannot download "
        f"ImageNet: get the ILSVRC2012 archives from https://image-net.org (registration required), unpack them "
        f"into that layout (torchvision.datasets.ImageNet(root) does it from the archives), and set DATA_DIR to the "
        f"folder that holds imagenet/, or data.root=<the ImageNet root>.")


def read_wnid_file(path: Path) -> list[str]:
    """The wnids of a list file: the first word of every non-empty line (``LOC_synset_mapping.txt`` works)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise DatasetError(f"Restricted ImageNet: could not read the wnid list {path}: {err}") from err
    return [line.split()[0] for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _read_meta(root: Path) -> tuple[dict[str, tuple[str, ...]], list[str]] | None:
    """torchvision.datasets.ImageNet's ``meta.bin``: ``(wnid_to_classes, val_wnids)``, or None when absent."""
    path = root / "meta.bin"
    if not path.is_file():
        return None
    try:
        wnid_to_classes, val_wnids = torch.load(path, weights_only=True)
    except Exception as err:
        raise DatasetError(f"Restricted ImageNet: {path} is not torchvision's ImageNet meta.bin "
                           f"({type(err).__name__}: {err}); delete it or rebuild it with "
                           f"torchvision.datasets.ImageNet(root)") from err
    return dict(wnid_to_classes), list(val_wnids)


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def imagenet_wnids(root: Path, wnid_file: Path | None = None) -> tuple[list[str], str]:
    """The 1,000 ImageNet wnids, sorted (index = ImageNet class index), and where they came from.

    Sources, first found: ``wnid_file``; torchvision's ``meta.bin``; ``LOC_synset_mapping.txt`` or
    ``wnids.txt`` in the root; the class folders of ``train/`` or ``val/`` when all 1,000 are there.
    """
    candidates: list[tuple[str, list[str]]] = []
    if wnid_file is not None:
        candidates.append((str(wnid_file), read_wnid_file(wnid_file)))
    else:
        meta = _read_meta(root)
        if meta is not None:
            candidates.append((str(root / "meta.bin"), list(meta[0])))
        candidates += [(str(root / name), read_wnid_file(root / name)) for name in WNID_FILES
                       if (root / name).is_file()]
        for split in ("train", "val"):
            folders = _subfolders(root / split)
            if len(folders) == NUM_IMAGENET_CLASSES:
                candidates.append((f"the class folders of {root / split}", folders))
    if not candidates:
        raise DatasetError(
            f"Restricted ImageNet: cannot tell the ImageNet class index of the folders in {root}: it needs the "
            f"sorted list of all {NUM_IMAGENET_CLASSES} wnids, and found no wnid list (data.wnids=<file>, "
            f"meta.bin, {' or '.join(WNID_FILES)}) and no train/ or val/ with all {NUM_IMAGENET_CLASSES} class "
            f"folders. Give data.wnids=<a file with the {NUM_IMAGENET_CLASSES} ImageNet wnids, one per line>.")
    source, wnids = candidates[0]
    if len(set(wnids)) != NUM_IMAGENET_CLASSES or len(wnids) != NUM_IMAGENET_CLASSES:
        raise DatasetError(f"Restricted ImageNet: the wnid list from {source} has {len(wnids)} entries "
                           f"({len(set(wnids))} distinct); it must name each of the {NUM_IMAGENET_CLASSES} "
                           f"ImageNet classes once")
    return sorted(wnids), source


def scan_split(root: Path, train: bool, wnid_file: Path | None = None) -> list[tuple[str, int]]:
    """``(path, super-class)`` of every Restricted-ImageNet image of a split, sorted by ImageNet index, then name.

    ``train/<wnid>/*`` for training, ``val/<wnid>/*`` for testing; a flat ``val/`` is labelled by
    torchvision's ``meta.bin`` (its ``val_wnids`` follow the sorted file names).
    """
    split = "train" if train else "val"
    folder = root / split
    if not root.is_dir():
        raise _missing_root(root, f"the ImageNet root {root} does not exist")
    if not folder.is_dir():
        raise _missing_root(root, f"{folder} does not exist (needed for the {'training' if train else 'test'} split)")
    wnids, source = imagenet_wnids(root, wnid_file)
    classes = restricted_classes(wnids)
    known, index_of = set(wnids), {w: i for i, w in enumerate(wnids)}
    subfolders = _subfolders(folder)
    entries: list[tuple[int, str, int]] = []  # (ImageNet index, path, label)
    if subfolders:
        unknown = [name for name in subfolders if name not in known]
        if unknown:
            raise DatasetError(f"Restricted ImageNet: {folder} has class folders that are not ImageNet wnids of "
                               f"{source}: {', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''}. "
                               f"Remove them, or give the right list with data.wnids=<file>")
        for wnid in subfolders:
            if wnid in classes:
                entries += [(index_of[wnid], str(p), classes[wnid]) for p in sorted((folder / wnid).iterdir())
                            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    else:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        meta = _read_meta(root) if not train else None
        if not files or meta is None or len(meta[1]) != len(files):
            raise _missing_root(root, f"{folder} has no <wnid>/ class folders"
                                + ("" if train or not files else " and no meta.bin whose val_wnids label its "
                                   f"{len(files)} files"))
        entries = [(index_of[w], str(p), classes[w]) for p, w in zip(files, meta[1]) if w in classes]
    if not entries:
        raise DatasetError(f"Restricted ImageNet: {folder} holds no image of the 9 classes (ImageNet indices "
                           f"{', '.join(f'{a}-{b}' for a, b in RESTRICTED_IMAGENET_RANGES)} of {source})")
    counts = np.bincount([label for _, _, label in entries], minlength=len(CLASS_NAMES))
    log.info("Restricted ImageNet %s: %d images (%s)", split, len(entries),
             ", ".join(f"{name} {n}" for name, n in zip(CLASS_NAMES, counts)))
    if (counts == 0).any():
        log.warning("Restricted ImageNet %s: no images of %s", split,
                    ", ".join(name for name, n in zip(CLASS_NAMES, counts) if n == 0))
    entries.sort(key=lambda e: (e[0], Path(e[1]).name))
    return [(path, label) for _, path, label in entries]


def decode_rgb(path: str) -> Image.Image:
    """An image file as 8-bit RGB: grayscale expanded to three channels, alpha dropped, CMYK converted."""
    try:
        with Image.open(path) as picture:
            return picture.convert("RGB")
    except Exception as err:
        raise DatasetError(f"Restricted ImageNet image {path} could not be decoded ({type(err).__name__}: {err}); "
                           f"replace it with an intact copy") from err


def _as_tensor(picture: Image.Image) -> Tensor:
    return torch.from_numpy(np.asarray(picture, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def _linear_taps(src: int, dst: int, clamp: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Source taps and 11-bit fixed-point weights of OpenCV's INTER_LINEAR along one axis (half-pixel centres).

    The position is computed in float32 as OpenCV does; columns (``clamp``) pin the weight to the edge
    pixel outside the image, rows keep their fraction and repeat the edge row instead.
    """
    scale = 1.0 / (dst / src)
    position = ((torch.arange(dst, dtype=torch.float64) + 0.5) * scale - 0.5).to(torch.float32)
    first = torch.floor(position)
    fraction, first = position - first, first.long()
    if clamp:
        low, high = first < 0, first >= src - 1
        fraction[low | high] = 0.0
        first = torch.where(low, 0, torch.where(high, src - 1, first))
    w0, w1 = torch.round((1 - fraction) * 2048).long(), torch.round(fraction * 2048).long()  # half to even
    return first.clamp(0, src - 1), (first + 1).clamp(0, src - 1), w0, w1


def seed_resize(image: Tensor, size: int = 224) -> Tensor:
    """uint8 ``(C, H, W)`` resized straight to ``(C, size, size)`` exactly as the seed's ``cv2.resize(img, (size, size))``.

    OpenCV's 8-bit INTER_LINEAR: 11-bit weights, a horizontal pass kept at scale 2048, then the
    vertical pass with its vectorised rounding ``((b0 (S0 >> 4)) >> 16 + (b1 (S1 >> 4)) >> 16 + 2) >> 2``.
    Equal to cv2 pixel for pixel (tested on up- and down-scaling), in integer torch arithmetic.
    """
    if image.dtype != torch.uint8 or image.dim() != 3:
        raise ValueError(f"seed_resize needs a uint8 (C, H, W) image, got {image.dtype} {tuple(image.shape)}")
    _, height, width = image.shape
    x0, x1, a0, a1 = _linear_taps(width, size, clamp=True)
    y0, y1, b0, b1 = _linear_taps(height, size, clamp=False)
    a0, a1, b0, b1 = (w.to(torch.int32) for w in (a0, a1, b0, b1))  # every product stays below 2^27
    pixels = image.to(torch.int32)
    rows = torch.index_select(pixels, 2, x0) * a0 + torch.index_select(pixels, 2, x1) * a1  # (C, H, size), x2048
    rows >>= 4
    top = torch.index_select(rows, 1, y0).mul_(b0[:, None]).bitwise_right_shift_(16)
    bottom = torch.index_select(rows, 1, y1).mul_(b1[:, None]).bitwise_right_shift_(16)
    return top.add_(bottom).add_(2).bitwise_right_shift_(2).clamp_(0, 255).to(torch.uint8)


def random_resized_crop_box(width: int, height: int, generator: torch.Generator, scale: tuple[float, float] = (0.08, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """``(left, top, crop_width, crop_height)`` of a random crop covering ``scale`` of the area at an aspect in ``ratio``.

    The usual ImageNet training crop: up to 10 draws of (area, log-uniform aspect) that fit, else the
    largest centred crop whose aspect is inside ``ratio``. All randomness comes from ``generator``.
    """
    area = width * height
    log_low, log_high = np.log(ratio[0]), np.log(ratio[1])
    for _ in range(10):
        u = torch.rand(2, generator=generator).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = float(np.exp(log_low + (log_high - log_low) * u[1]))
        w, h = round((target * aspect) ** 0.5), round((target / aspect) ** 0.5)
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return left, top, w, h
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def center_crop(picture: Image.Image, size: int = 224) -> Image.Image:
    """The usual ImageNet evaluation view: shorter side resized to ``size / 0.875`` (256 for 224), centre crop."""
    short = round(size / 0.875)
    width, height = picture.size
    if width <= height:
        new_w, new_h = short, int(short * height / width)
    else:
        new_w, new_h = int(short * width / height), short
    picture = picture.resize((new_w, new_h), Image.BILINEAR)
    left, top = round((new_w - size) / 2.0), round((new_h - size) / 2.0)
    return picture.crop((left, top, left + size, top + size))


def random_crop(picture: Image.Image, generator: torch.Generator, size: int = 224) -> Image.Image:
    """The usual ImageNet training view: a random resized crop to ``size`` x ``size``, flipped with probability 1/2."""
    left, top, w, h = random_resized_crop_box(*picture.size, generator)
    picture = picture.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
    if bool(torch.rand(1, generator=generator) < 0.5):
        picture = picture.transpose(Image.FLIP_LEFT_RIGHT)
    return picture


class RestrictedImageNetFolder(StreamingDataset):
    """The images of one split as uint8 ``(3, size, size)`` and their super-class, decoded on demand.

    ``resize="seed"``: straight bilinear resize (the seed's, train and test alike); ``"crop"``: a
    random resized crop and flip when a generator is given (training batches), else resize 256 and
    centre crop 224.
    """

    def __init__(self, samples: list[tuple[str, int]], size: int = 224, resize: Resize = "seed") -> None:
        check_choice("resize", resize, ("seed", "crop"))
        self.samples, self.size, self.resize = samples, size, resize

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> Tensor:
        """Every example's super-class, without decoding an image."""
        return torch.tensor([label for _, label in self.samples], dtype=torch.int64)

    def get(self, index: int, generator: torch.Generator | None) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        picture = decode_rgb(path)
        if self.resize == "seed":
            return seed_resize(_as_tensor(picture), self.size), label
        view = random_crop(picture, generator, self.size) if generator is not None else center_crop(picture, self.size)
        return _as_tensor(view), label


class RestrictedImageNetDataModule(StreamingDataModule):
    """Restricted ImageNet, 9 classes, 3x224x224 in [0, 1], read from an ImageNet folder tree by workers.

    Training images come from ``<root>/train``, test images from ``<root>/val`` (the seed evaluates
    on the validation set); ``root`` defaults to ``<data_dir>/imagenet``. Each split is sorted, then
    put in a fixed order drawn from ``order_seed`` (None keeps the sorted, class-by-class order), so
    ``val_size`` and ``test_subset`` take class-mixed prefixes. ``wnids`` names a file with the
    1,000 ImageNet wnids when the tree itself does not say (see :func:`imagenet_wnids`).
    """

    num_classes = len(CLASS_NAMES)
    input_shape = (3, 224, 224)
    class_names = CLASS_NAMES

    def __init__(self, data_dir: str | Path = "data", root: str | None = None, wnids: str | None = None,
                 resize: Resize = "seed", image_size: int = 224, order_seed: int | None = 0,
                 batch_size: int = 64, eval_batch_size: int | None = None, val_size: int = 0,
                 test_subset: int | None = None, shuffle_seed: int = 0, cache_dir: str | Path | None = None,
                 num_workers: int = 8, prefetch_factor: int = 2) -> None:
        super().__init__(data_dir=data_dir, batch_size=batch_size, eval_batch_size=eval_batch_size,
                         val_size=val_size, test_subset=test_subset, download=False, shuffle_seed=shuffle_seed,
                         cache_dir=cache_dir, num_workers=num_workers, prefetch_factor=prefetch_factor)
        check_choice("resize", resize, ("seed", "crop"))
        check_range("image_size", image_size, low=1)
        self.root = Path(root).expanduser().resolve() if root else self.data_dir / "imagenet"
        self.wnids = Path(wnids).expanduser().resolve() if wnids else None
        self.resize, self.order_seed = resize, order_seed
        self.input_shape = (3, image_size, image_size)
        self.random_train_transforms = resize == "crop"

    def dataset(self, train: bool) -> RestrictedImageNetFolder:
        samples = scan_split(self.root, train, self.wnids)
        if self.order_seed is not None:
            order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(self.order_seed)).tolist()
            samples = [samples[i] for i in order]
        return RestrictedImageNetFolder(samples, self.input_shape[1], self.resize)


__all__ = ["CLASS_NAMES", "RESTRICTED_IMAGENET_RANGES", "RestrictedImageNetDataModule", "RestrictedImageNetFolder",
           "center_crop", "imagenet_wnids", "random_crop", "random_resized_crop_box", "restricted_classes",
           "restricted_label", "scan_split", "seed_resize"]
