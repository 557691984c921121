"""The differentiable JPEG transform the JPEG attacks perturb: YCbCr, 4:2:0 chroma, 8x8 DCT, quantisation.

Images in [0, 1] are scaled to JPEG's [0, 255], converted to YCbCr (JFIF / ITU-R BT.601 full range),
the two chroma planes averaged over 2x2 pixels (``chroma_subsampling``), each plane cut into 8x8
blocks, level-shifted by -128, transformed with the orthonormal 2-D DCT-II (the JPEG DCT) and divided
by the standard quality-50 tables (ITU T.81 Annex K). Nothing is rounded: the attacks add their
perturbation to these real-valued "quantised" coefficients, then :meth:`JPEGCodec.decode` inverts
every step exactly (the chroma planes are repeated back to full size). Grey images are treated as
RGB with three equal channels and averaged back to one channel after decoding, as the seed's MNIST
path does. Sizes that are not multiples of the block side are padded (edge pixels, centred) and
cropped back.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

# ITU-R BT.601 full-range RGB -> YCbCr (JFIF); the inverse is this matrix's exact inverse
RGB_TO_YCBCR = ((0.299, 0.587, 0.114),
                (-0.168736, -0.331264, 0.5),
                (0.5, -0.418688, -0.081312))
YCBCR_SHIFT = (0.0, 128.0, 128.0)
# ITU T.81 Annex K quantisation tables (quality 50), rows = vertical frequency
LUMA_TABLE = ((16, 11, 10, 16, 24, 40, 51, 61),
              (12, 12, 14, 19, 26, 58, 60, 55),
              (14, 13, 16, 24, 40, 57, 69, 56),
              (14, 17, 22, 29, 51, 87, 80, 62),
              (18, 22, 37, 56, 68, 109, 103, 77),
              (24, 35, 55, 64, 81, 104, 113, 92),
              (49, 64, 78, 87, 103, 121, 120, 101),
              (72, 92, 95, 98, 112, 100, 103, 99))
CHROMA_TABLE = ((17, 18, 24, 47, 99, 99, 99, 99),
                (18, 21, 26, 66, 99, 99, 99, 99),
                (24, 26, 56, 99, 99, 99, 99, 99),
                (47, 66, 99, 99, 99, 99, 99, 99)) + ((99,) * 8,) * 4
BLOCK = 8


def dct_matrix(n: int = BLOCK, dtype: torch.dtype = torch.float64) -> Tensor:
    """The orthonormal DCT-II matrix ``D`` (``D @ D.T == I``): ``dct(v) = D @ v`` as scipy's ``norm="ortho"``."""
    return _dct_matrix(n, dtype, torch.device("cpu"))


@lru_cache(maxsize=16)
def _dct_matrix(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    k = torch.arange(n, dtype=torch.float64)
    d = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(dtype=dtype, device=device)


def block_dct(blocks: Tensor) -> Tensor:
    """2-D orthonormal DCT-II of every trailing 8x8 block."""
    d = _dct_matrix(blocks.shape[-1], blocks.dtype, blocks.device)
    return d @ blocks @ d.T


def block_idct(coefficients: Tensor) -> Tensor:
    """Inverse of :func:`block_dct` (the transpose, since the DCT matrix is orthonormal)."""
    d = _dct_matrix(coefficients.shape[-1], coefficients.dtype, coefficients.device)
    return d.T @ coefficients @ d


@lru_cache(maxsize=32)
def _constant(name: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The codec's constant tensors, built once per dtype and device (no host copies in the attack loop)."""
    if name == "rgb_to_ycbcr":
        value = torch.tensor(RGB_TO_YCBCR, dtype=torch.float64)
    elif name == "ycbcr_to_rgb":
        value = torch.linalg.inv(torch.tensor(RGB_TO_YCBCR, dtype=torch.float64))
    elif name == "shift":
        value = torch.tensor(YCBCR_SHIFT, dtype=torch.float64).view(1, 3, 1, 1)
    elif name == "luma":
        value = torch.tensor(LUMA_TABLE, dtype=torch.float64)
    else:
        value = torch.tensor(CHROMA_TABLE, dtype=torch.float64)
    return value.to(dtype=dtype, device=device)


def rgb_to_ycbcr(rgb: Tensor) -> Tensor:
    """(N, 3, H, W) RGB in [0, 255] -> YCbCr (JFIF full range)."""
    m = _constant("rgb_to_ycbcr", rgb.dtype, rgb.device)
    return torch.einsum("ij,njhw->nihw", m, rgb) + _constant("shift", rgb.dtype, rgb.device)


def ycbcr_to_rgb(ycbcr: Tensor) -> Tensor:
    """Exact inverse of :func:`rgb_to_ycbcr` (the matrix inverse, not JFIF's rounded decoding constants)."""
    inv = _constant("ycbcr_to_rgb", ycbcr.dtype, ycbcr.device)
    return torch.einsum("ij,njhw->nihw", inv, ycbcr - _constant("shift", ycbcr.dtype, ycbcr.device))


def to_blocks(plane: Tensor) -> Tensor:
    """(N, H, W) -> (N, H/8, W/8, 8, 8)."""
    n, h, w = plane.shape
    return plane.reshape(n, h // BLOCK, BLOCK, w // BLOCK, BLOCK).transpose(2, 3)


def from_blocks(blocks: Tensor) -> Tensor:
    """Inverse of :func:`to_blocks`."""
    n, bh, bw, _, _ = blocks.shape
    return blocks.transpose(2, 3).reshape(n, bh * BLOCK, bw * BLOCK)


class JPEGCodec:
    """Encode images to quantised DCT coefficients (Y, Cb, Cr) and decode them back, differentiably."""

    def __init__(self, chroma_subsampling: bool = True) -> None:
        self.chroma_subsampling = bool(chroma_subsampling)

    @property
    def multiple(self) -> int:
        """Image sides are padded to a multiple of this (16 with 4:2:0 chroma, else 8)."""
        return 2 * BLOCK if self.chroma_subsampling else BLOCK

    def padding(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) edge padding that centres the image in whole blocks."""
        m = self.multiple
        ph, pw = (-height) % m, (-width) % m
        return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2

    def encode(self, x: Tensor) -> list[Tensor]:
        """(N, 1 or 3, H, W) in [0, 1] -> [Y, Cb, Cr] coefficients, each (N, blocks_h, blocks_w, 8, 8)."""
        rgb = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        pad = self.padding(x.shape[2], x.shape[3])
        if any(pad):
            rgb = F.pad(rgb, pad, mode="replicate")
        ycc = rgb_to_ycbcr(rgb * 255.0)
        planes = [ycc[:, 0]]
        for c in (1, 2):
            chroma = ycc[:, c]
            if self.chroma_subsampling:
                chroma = F.avg_pool2d(chroma[:, None], 2)[:, 0]
            planes.append(chroma)
        tables = self._tables(x)
        return [block_dct(to_blocks(p) - 128.0) / t for p, t in zip(planes, tables)]

    def decode(self, coefficients: list[Tensor], channels: int, height: int, width: int) -> Tensor:
        """Inverse of :meth:`encode` (no clamping): coefficients -> (N, channels, H, W) in [0, 1] units."""
        tables = self._tables(coefficients[0])
        planes = [from_blocks(block_idct(c * t) + 128.0) for c, t in zip(coefficients, tables)]
        if self.chroma_subsampling:
            planes[1:] = [p.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2) for p in planes[1:]]
        rgb = ycbcr_to_rgb(torch.stack(planes, dim=1)) / 255.0
        left, _, top, _ = self.padding(height, width)
        rgb = rgb[:, :, top:top + height, left:left + width]
        return rgb.mean(dim=1, keepdim=True) if channels == 1 else rgb

    def coefficient_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        """(blocks_h, blocks_w) of the Y, Cb and Cr planes for an image of this size."""
        left, right, top, bottom = self.padding(height, width)
        bh, bw = (height + top + bottom) // BLOCK, (width + left + right) // BLOCK
        c = (bh // 2, bw // 2) if self.chroma_subsampling else (bh, bw)
        return [(bh, bw), c, c]

    @staticmethod
    def _tables(like: Tensor) -> list[Tensor]:
        luma, chroma = (_constant(k, like.dtype, like.device) for k in ("luma", "chroma"))
        return [luma, chroma, chroma]
