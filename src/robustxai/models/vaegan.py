"""The VAE-GAN of Kim, Seo & Jeon (seed 002, spec section 3.2): encoder, decoder, discriminator.

The seed works in [-1, 1] pixel units; this model takes and returns images in the pixel box [0, 1]
like every model here and maps them inside (``to_units``: 2x - 1 on the way in, ``from_units``:
(t + 1) / 2 on the decoder's tanh output). The training losses are computed in the seed's units
(see ``robustxai.methods.vaegan``), so its loss weights carry over unchanged.

TF1 details kept: layer order op -> activation -> BatchNorm (momentum 0.99, i.e. PyTorch 0.01; eps
1e-3); TF ``SAME`` padding, asymmetric on odd sizes (a 4x4 stride-2 conv takes 7 -> 4 with 1 row
before and 2 after); Glorot-uniform kernels with zero biases. The CIFAR discriminator's convolutions
are divided by max(sigma / beta, 1), sigma the spectral norm of the *convolution operator* (not of
the reshaped kernel matrix, which is what ``torch.nn.utils.spectral_norm`` uses), estimated by one
power iteration per forward pass through ``conv2d`` and ``conv_transpose2d`` (stored in training mode).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Variant = Literal["mnist", "cifar"]
BN_MOMENTUM = 0.01  # TF's 0.99
BN_EPS = 1e-3
# the architectures are fixed to these shapes (the seed's); (channels, size)
SHAPES: dict[str, tuple[int, int]] = {"mnist": (1, 28), "cifar": (3, 32)}
DEFAULT_ZDIM = {"mnist": 10, "cifar": 128}


def to_units(x: Tensor) -> Tensor:
    """[0, 1] pixels -> the seed's [-1, 1] units."""
    return x * 2.0 - 1.0


def from_units(t: Tensor) -> Tensor:
    """The seed's [-1, 1] units -> [0, 1] pixels."""
    return (t + 1.0) * 0.5


# -- TF-style SAME convolutions ------------------------------------------------------------------
def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF ``SAME`` padding (before, after) of one spatial axis: output ceil(size / stride), extra row after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pads(height: int, width: int, kernel: int, stride: int) -> tuple[int, int, int, int]:
    """``F.pad`` order (left, right, top, bottom) of TF SAME padding."""
    top, bottom = same_padding(height, kernel, stride)
    left, right = same_padding(width, kernel, stride)
    return left, right, top, bottom


def conv_operator(u: Tensor, weight: Tensor, stride: int, pads: tuple[int, int, int, int]) -> Tensor:
    """The linear map A u of a (bias-free) padded convolution."""
    return F.conv2d(F.pad(u, pads), weight, stride=stride)


def conv_operator_transpose(v: Tensor, weight: Tensor, stride: int, pads: tuple[int, int, int, int],
                            input_hw: tuple[int, int]) -> Tensor:
    """The adjoint A^T v of :func:`conv_operator` (conv_transpose2d, then the padding cropped off)."""
    left, right, top, bottom = pads
    height, width = input_hw
    k_h, k_w = weight.shape[-2:]
    padded_h, padded_w = height + top + bottom, width + left + right
    # rows of the padded input that no output position reaches get zero (output_padding < stride)
    extra = (padded_h - ((v.shape[-2] - 1) * stride + k_h), padded_w - ((v.shape[-1] - 1) * stride + k_w))
    full = F.conv_transpose2d(v, weight, stride=stride, output_padding=extra)
    return full[..., top:top + height, left:left + width]


def _normalise(t: Tensor) -> Tensor:
    return t / t.flatten().norm().clamp_min(1e-12)


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TF ``SAME`` padding (asymmetric where TF pads more after), Glorot init, zero bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0)
        nn.init.xavier_uniform_(self.weight)
        nn.init.zeros_(self.bias)

    def pads(self, height: int, width: int) -> tuple[int, int, int, int]:
        return _pads(height, width, self.kernel_size[0], self.stride[0])

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, self.pads(*x.shape[-2:])), self.weight, self.bias, stride=self.stride)


class SNConv2d(Conv2dSame):
    """A SAME convolution whose kernel is divided by max(sigma / beta, 1), sigma the conv operator's norm.

    As the seed's ``SN_Conv``: ``u`` (a persistent buffer of the input's shape, one image, truncated-
    normal start) is the power iteration's state; each forward pass takes one step
    v = A u / ||A u||, u' = A^T v / ||A^T v||, and sigma = <v, A u'> (= ||A^T v||, a lower bound of the
    largest singular value that converges to it), differentiated through the whole iteration as TF
    does. In training mode u' is stored (the seed's ``u.assign``); in eval mode nothing changes.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 input_size: int = 32, beta: float = 1.0) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride)
        if beta <= 0:
            raise ValueError(f"beta must be > 0 (the spectral-norm bound), got {beta}")
        self.input_size, self.beta = input_size, float(beta)
        u = torch.empty(1, in_channels, input_size, input_size)
        self.register_buffer("u", nn.init.trunc_normal_(u, std=1.0, a=-2.0, b=2.0))

    def operator(self, u: Tensor) -> Tensor:
        """A u: this convolution (no bias) applied to images of the input's shape."""
        return conv_operator(u, self.weight, self.stride[0], self.pads(*u.shape[-2:]))

    def operator_transpose(self, v: Tensor) -> Tensor:
        """A^T v, through ``conv_transpose2d``."""
        return conv_operator_transpose(v, self.weight, self.stride[0], self.pads(*self.u.shape[-2:]),
                                       tuple(self.u.shape[-2:]))

    def iterate(self) -> tuple[Tensor, Tensor]:
        """One power-iteration step from the stored u: (sigma estimate, new u), both differentiable."""
        v = _normalise(self.operator(self.u.clone()))
        u_new = _normalise(self.operator_transpose(v))
        return (v * self.operator(u_new)).sum(), u_new

    @torch.no_grad()
    def power_iteration(self, steps: int = 1) -> None:
        """Advance the stored u by ``steps`` steps (without touching the kernel)."""
        for _ in range(steps):
            self.u.copy_(self.iterate()[1])

    def sigma(self) -> Tensor:
        """The estimate of the operator norm one step from the stored u (u itself is not changed)."""
        return self.iterate()[0]

    def normalised_weight(self) -> Tensor:
        """The kernel divided by max(sigma / beta, 1); in training mode u advances by one step."""
        sigma, u_new = self.iterate()
        if self.training:
            with torch.no_grad():
                self.u.copy_(u_new)
        return self.weight / torch.clamp(sigma / self.beta, min=1.0)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[-2:]) != tuple(self.u.shape[-2:]):
            raise ValueError(f"SNConv2d was built for {tuple(self.u.shape[-2:])} inputs (input_size), "
                             f"got {tuple(x.shape[-2:])}")
        return F.conv2d(F.pad(x, self.pads(*x.shape[-2:])), self.normalised_weight(), self.bias,
                        stride=self.stride)


class ConvTranspose2dInit(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with Glorot-uniform kernel and zero bias (TF's defaults)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 padding: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        nn.init.xavier_uniform_(self.weight)
        nn.init.zeros_(self.bias)


def dense(in_features: int, out_features: int) -> nn.Linear:
    """``nn.Linear`` with Glorot-uniform weight and zero bias."""
    layer = nn.Linear(in_features, out_features)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def bn2d(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def bn1d(features: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(features, eps=BN_EPS, momentum=BN_MOMENTUM)


class Unflatten(nn.Module):
    """(N, C*H*W) -> (N, C, H, W)."""

    def __init__(self, channels: int, side: int) -> None:
        super().__init__()
        self.shape = (channels, side, side)

    def forward(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], *self.shape)


# -- the three networks, in the seed's [-1, 1] units ----------------------------------------------
def mnist_encoder(in_channels: int, zdim: int) -> nn.Sequential:
    """conv4x4 s2 64/128/256 (ReLU, BN) 28 -> 14 -> 7 -> 4, flatten 4096, dense 2 zdim with BN, no activation."""
    return nn.Sequential(
        Conv2dSame(in_channels, 64, 4, 2), nn.ReLU(), bn2d(64),
        Conv2dSame(64, 128, 4, 2), nn.ReLU(), bn2d(128),
        Conv2dSame(128, 256, 4, 2), nn.ReLU(), bn2d(256),
        nn.Flatten(), dense(4 * 4 * 256, 2 * zdim), bn1d(2 * zdim),
    )


def mnist_decoder(out_channels: int, zdim: int) -> nn.Sequential:
    """dense 2x2x256 (ReLU, BN), deconvs 4x4: s2 256 (4), s1 VALID 128 (7), s2 32 (14), s2 tanh (28)."""
    return nn.Sequential(
        dense(zdim, 2 * 2 * 256), nn.ReLU(), bn1d(2 * 2 * 256), Unflatten(256, 2),
        ConvTranspose2dInit(256, 256, 4, 2, 1), nn.ReLU(), bn2d(256),
        ConvTranspose2dInit(256, 128, 4, 1, 0), nn.ReLU(), bn2d(128),
        ConvTranspose2dInit(128, 32, 4, 2, 1), nn.ReLU(), bn2d(32),
        ConvTranspose2dInit(32, out_channels, 4, 2, 1), nn.Tanh(),
    )


def mnist_discriminator(in_channels: int) -> nn.Sequential:
    """conv4x4 s2 32 (ReLU), 128/256/256 (ReLU, BN) 28 -> 2, flatten 1024, dense 512 (ReLU, BN), dense 1, sigmoid."""
    return nn.Sequential(
        Conv2dSame(in_channels, 32, 4, 2), nn.ReLU(),
        Conv2dSame(32, 128, 4, 2), nn.ReLU(), bn2d(128),
        Conv2dSame(128, 256, 4, 2), nn.ReLU(), bn2d(256),
        Conv2dSame(256, 256, 4, 2), nn.ReLU(), bn2d(256),
        nn.Flatten(), dense(2 * 2 * 256, 512), nn.ReLU(), bn1d(512), dense(512, 1), nn.Sigmoid(),
    )


def cifar_encoder(in_channels: int, zdim: int) -> nn.Sequential:
    """conv5x5 s2 64/128/256 (ReLU, BN) 32 -> 4, flatten 4096, dense 2 zdim with BN."""
    return nn.Sequential(
        Conv2dSame(in_channels, 64, 5, 2), nn.ReLU(), bn2d(64),
        Conv2dSame(64, 128, 5, 2), nn.ReLU(), bn2d(128),
        Conv2dSame(128, 256, 5, 2), nn.ReLU(), bn2d(256),
        nn.Flatten(), dense(4 * 4 * 256, 2 * zdim), bn1d(2 * zdim),
    )


def cifar_decoder(out_channels: int, zdim: int) -> nn.Sequential:
    """dense 4x4x512 (no activation, no BN), deconv4x4 s2 256/128/64 (ReLU, BN) 4 -> 32, conv3x3 tanh."""
    return nn.Sequential(
        dense(zdim, 4 * 4 * 512), Unflatten(512, 4),
        ConvTranspose2dInit(512, 256, 4, 2, 1), nn.ReLU(), bn2d(256),
        ConvTranspose2dInit(256, 128, 4, 2, 1), nn.ReLU(), bn2d(128),
        ConvTranspose2dInit(128, 64, 4, 2, 1), nn.ReLU(), bn2d(64),
        Conv2dSame(64, out_channels, 3, 1), nn.Tanh(),
    )


def cifar_discriminator(in_channels: int, beta: float = 1.0) -> nn.Sequential:
    """SN-GAN style: 7 spectrally normalised convs with leaky ReLU 0.1 (32 -> 4), flatten 8192, dense 1, sigmoid."""
    layers: list[nn.Module] = []
    side, channels = 32, in_channels
    for kernel, stride, out in ((3, 1, 64), (4, 2, 64), (3, 1, 128), (4, 2, 128), (3, 1, 256), (4, 2, 256),
                                (3, 1, 512)):
        layers += [SNConv2d(channels, out, kernel, stride, input_size=side, beta=beta), nn.LeakyReLU(0.1)]
        side, channels = -(-side // stride), out
    return nn.Sequential(*layers, nn.Flatten(), dense(4 * 4 * 512, 1), nn.Sigmoid())


class KimVAEGAN(nn.Module):
    """The seed's VAE-GAN (``variant`` "mnist", also for Fashion-MNIST, or "cifar") on [0, 1] images.

    ``encoder``, ``decoder`` and ``discriminator`` work in the seed's [-1, 1] units; the methods
    below take and return [0, 1] images. ``forward`` is the projection onto the approximated
    manifold, P(x) = Dec(mu(x) + sigma(x) * noise) (the seed's stochastic reconstruction).
    """

    def __init__(self, variant: Variant = "mnist", in_channels: int | None = None,
                 input_size: int | None = None, zdim: int | None = None, sn_beta: float = 1.0) -> None:
        super().__init__()
        if variant not in SHAPES:
            raise ValueError(f"variant must be one of {sorted(SHAPES)}, got {variant!r}")
        channels, size = SHAPES[variant]
        if input_size is not None and input_size != size:
            raise ValueError(f"the {variant} VAE-GAN is built for {size}x{size} images, got input_size="
                             f"{input_size}; use model=kim_vaegan_{'cifar' if size == 28 else 'mnist'} "
                             f"or data of that size")
        in_channels = channels if in_channels is None else in_channels
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        zdim = DEFAULT_ZDIM[variant] if zdim is None else zdim
        if zdim < 1:
            raise ValueError(f"zdim must be >= 1, got {zdim}")
        self.variant, self.zdim, self.in_channels, self.input_size = variant, zdim, in_channels, size
        if variant == "mnist":
            self.encoder = mnist_encoder(in_channels, zdim)
            self.decoder = mnist_decoder(in_channels, zdim)
            self.discriminator = mnist_discriminator(in_channels)
        else:
            self.encoder = cifar_encoder(in_channels, zdim)
            self.decoder = cifar_decoder(in_channels, zdim)
            self.discriminator = cifar_discriminator(in_channels, beta=sn_beta)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, log sigma^2) of q(z | x) for [0, 1] images."""
        mu, logvar = self.encoder(to_units(x)).chunk(2, dim=1)
        return mu, logvar

    @staticmethod
    def sample(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z = mu + exp(logvar / 2) * noise, noise ~ N(0, I) (from ``generator`` when given)."""
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * noise

    def decode(self, z: Tensor) -> Tensor:
        """Images in [0, 1] for latent codes z."""
        return from_units(self.decoder(z))

    def discriminate(self, x: Tensor) -> Tensor:
        """D's probability that each [0, 1] image is real, shape (N,)."""
        return self.discriminator(to_units(x)).squeeze(1)

    @torch.no_grad()
    def recalibrate_batchnorm(self, images: Tensor, batch_size: int = 100,
                              generator: torch.Generator | None = None) -> None:
        """Recompute the encoder's and decoder's BN running statistics as exact averages over ``images``.

        For briefly trained models: with TF's momentum 0.99 the running statistics lag far behind the
        weights for the first thousands of updates, so inference-mode reconstructions are poor. Each
        batch updates the encoder (on x) and the decoder (on a posterior and a prior sample, as in
        training) with cumulative averaging (momentum None). The discriminator is left alone.
        """
        layers = [m for part in (self.encoder, self.decoder) for m in part.modules()
                  if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [m.momentum for m in layers]
        was_training = self.training
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
        self.encoder.train()
        self.decoder.train()
        try:
            for x in images.split(batch_size):
                x = x.float().div(255.0) if x.dtype == torch.uint8 else x
                mu, logvar = self.encode(x)
                self.decoder(self.sample(mu, logvar, generator))
                self.decoder(torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype))
        finally:
            for m, momentum in zip(layers, saved):
                m.momentum = momentum
            self.train(was_training)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The projection P(x) = Dec(mu + sigma * noise), in [0, 1]."""
        mu, logvar = self.encode(x)
        return self.decode(self.sample(mu, logvar, generator))


__all__ = ["Conv2dSame", "KimVAEGAN", "SNConv2d", "conv_operator", "conv_operator_transpose", "same_padding"]
