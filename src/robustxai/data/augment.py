"""The RAR seed's offline augmentation: balance every class to N images with random geometric warps.

Each extra image is a class original (cycled in order) warped by a random rotation, translation
and projective corner jitter (seed_rar.md 5.3), composed into ONE homography per image and
resampled once (bilinear, edge fill) with batched ``grid_sample``. Seeded, so the set is reproducible.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from robustxai.data.splits import rank_within_class


def rotation_about_centre(angles_deg: Tensor, height: int, width: int) -> Tensor:
    """``(N, 3, 3)`` rotations by ``angles_deg`` about the image centre ((W-1)/2, (H-1)/2), pixel coords (x, y)."""
    theta = torch.deg2rad(angles_deg.double())
    cos, sin = theta.cos(), theta.sin()
    cx, cy = (width - 1) / 2, (height - 1) / 2
    m = torch.zeros(len(angles_deg), 3, 3, dtype=torch.float64)
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = cos, -sin, cx - cos * cx + sin * cy
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = sin, cos, cy - sin * cx - cos * cy
    m[:, 2, 2] = 1.0
    return m


def translation(shifts: Tensor) -> Tensor:
    """``(N, 3, 3)`` translations by ``shifts`` ``(N, 2)`` = (dx, dy) pixels."""
    m = torch.eye(3, dtype=torch.float64).repeat(len(shifts), 1, 1)
    m[:, :2, 2] = shifts.double()
    return m


def homography_from_points(src: Tensor, dst: Tensor) -> Tensor:
    """``(N, 3, 3)`` homographies mapping the four points ``src`` ``(N, 4, 2)`` onto ``dst`` (h33 = 1).

    Solves the 8x8 direct linear system of each image in one batched ``linalg.solve``.
    """
    src, dst = src.double(), dst.double()
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], dim=-1)
    a = torch.cat([rows_u, rows_v], dim=1)
    b = torch.cat([u, v], dim=1)
    h = torch.linalg.solve(a, b)
    return torch.cat([h, torch.ones(len(h), 1, dtype=h.dtype)], dim=1).view(-1, 3, 3)


def projective_jitter(n: int, size: int, generator: torch.Generator, scale: float = 0.3,
                      max_intensity: float = 0.8) -> Tensor:
    """The seed's projective warp: every corner moves by U(-d, d) per axis, d = scale*size*U(0, max_intensity).

    Returned as the sampling map (output pixel -> input pixel) that sends the jittered corners to the
    image corners, as skimage's ``warp(image, ProjectiveTransform.estimate(jittered, corners))`` does.
    """
    d = scale * size * max_intensity * torch.rand(n, 1, 1, generator=generator, dtype=torch.float64)
    offsets = (2 * torch.rand(n, 4, 2, generator=generator, dtype=torch.float64) - 1) * d
    corners = torch.tensor([[0, 0], [0, size], [size, size], [size, 0]], dtype=torch.float64)
    inward = torch.tensor([[1, 1], [1, -1], [-1, -1], [-1, 1]], dtype=torch.float64)
    jittered = corners + inward * offsets
    return homography_from_points(jittered, corners.expand(n, 4, 2))


def random_warps(n: int, height: int, width: int, generator: torch.Generator, max_rotation: float = 15.0,
                 max_shift: float = 2.5, projective_scale: float = 0.3, max_intensity: float = 0.8) -> Tensor:
    """``(N, 3, 3)`` sampling maps: rotation U(+-max_rotation deg), shift U(+-max_shift px), projective jitter.

    The seed applies rotate -> translate -> projective warp to the image; sampling the result at
    output pixel p reads the original at ``R^-1 T^-1 P(p)``, composed here into one matrix.
    """
    angles = (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1) * max_rotation
    shifts = (2 * torch.rand(n, 2, generator=generator, dtype=torch.float64) - 1) * max_shift
    perspective = projective_jitter(n, max(height, width), generator, projective_scale, max_intensity)
    return rotation_about_centre(-angles, height, width) @ translation(-shifts) @ perspective


def warp(images: Tensor, sampling: Tensor) -> Tensor:
    """Resample ``images`` ``(N, C, H, W)`` at ``sampling @ (x, y, 1)`` for every output pixel (x, y).

    Bilinear, edge fill (``padding_mode='border'``), pixel centres at integer coordinates. uint8
    images are rounded back to uint8; float images are returned as float.
    """
    n, _, h, w = images.shape
    # float32 coordinates: exact enough for images up to thousands of pixels, and twice as fast
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    s = sampling.float().view(n, 9, 1, 1)
    denominator = s[:, 6] * xs + s[:, 7] * ys + s[:, 8]
    grid = torch.empty(n, h, w, 2)
    grid[..., 0] = (s[:, 0] * xs + s[:, 1] * ys + s[:, 2]).div_(denominator).mul_(2 / max(w - 1, 1)).sub_(1)
    grid[..., 1] = (s[:, 3] * xs + s[:, 4] * ys + s[:, 5]).div_(denominator).mul_(2 / max(h - 1, 1)).sub_(1)
    grid = grid.to(images.device)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    if images.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out


def balance_classes(images: Tensor, labels: Tensor, per_class: int, seed: int, num_classes: int,
                    chunk: int = 4096, **warp_options: float) -> tuple[Tensor, Tensor]:
    """Keep every original and add warped copies until each class has ``per_class`` images (seed 5.3).

    The k-th extra image of a class warps that class's (k mod n_c)-th original. A class that
    already has ``per_class`` or more images keeps all of them and gets no extras. Extras are
    generated ``chunk`` at a time from one ``torch.Generator(seed)``; the result is the originals
    followed by the extras (the training loader shuffles every epoch).
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {labels.min().item()}..{labels.max().item()}")
    counts = torch.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"cannot balance classes {missing}: they have no images to augment")
    extra = (per_class - counts).clamp_min(0)
    extra_labels = torch.repeat_interleave(torch.arange(num_classes), extra)
    if len(extra_labels) == 0:
        return images, labels
    # source of the k-th extra of class c: the (k mod n_c)-th original of c, in dataset order
    k = rank_within_class(extra_labels, torch.arange(len(extra_labels)))
    by_class = torch.sort(labels, stable=True).indices
    starts = counts.cumsum(0) - counts
    sources = by_class[starts[extra_labels] + k % counts[extra_labels]]
    generator = torch.Generator().manual_seed(seed)
    _, _, h, w = images.shape
    out = torch.empty((len(sources), *images.shape[1:]), dtype=images.dtype)
    for start in range(0, len(sources), chunk):
        idx = sources[start:start + chunk]
        maps = random_warps(len(idx), h, w, generator, **warp_options)
        out[start:start + len(idx)] = warp(images[idx], maps).to(out.device)
    return torch.cat([images, out]), torch.cat([labels, extra_labels])


def augmented_size_bytes(num_classes: int, per_class: int, shape: tuple[int, int, int]) -> int:
    """Bytes of a balanced uint8 training set (e.g. GTSRB 43 x 10,000 x 3x32x32 = 1.32 GB)."""
    return num_classes * per_class * math.prod(shape)


def augment_training_split(images: Tensor, labels: Tensor, val_size: int, per_class: int, seed: int,
                           num_classes: int) -> tuple[Tensor, Tensor]:
    """Balance a training split, leaving its first ``val_size`` images (the validation set) untouched.

    The validation images stay first and unaugmented, and no extra image is made from them, so the
    data module's ``val_size`` carve-out still sees only originals and nothing leaks into training.
    """
    val_images, val_labels = images[:val_size], labels[:val_size]
    train_images, train_labels = balance_classes(images[val_size:], labels[val_size:], per_class, seed, num_classes)
    return torch.cat([val_images, train_images]), torch.cat([val_labels, train_labels])


__all__ = ["augment_training_split", "augmented_size_bytes", "balance_classes", "homography_from_points",
           "projective_jitter", "random_warps", "rotation_about_centre", "translation", "warp"]
