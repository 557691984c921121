"""VAE-GAN training of Kim, Seo & Jeon (seed 002, spec section 3.1): three Adams, manual optimisation.

Not on :class:`~robustxai.methods.base.ClassifierModule`: that base's contract (one optimiser under
automatic optimisation, a ``training_loss`` returning logits, accuracy and cross-entropy metrics) has
nothing to say about a generative model with three optimisers stepped in turn. This module keeps what
the base gives every method that still applies: the model under ``self.model`` (so
``load_model_weights`` reads its checkpoints), the RNG state and the model class in every checkpoint.

Losses, per example, in the seed's [-1, 1] units (x the image, x_r = Dec(z), z ~ q(z | x), x_f = Dec(z_p),
z_p ~ N(0, I), D a probability):

- R = sum_pixels |x - x_r| (L1 in pixel space), KL = -1/2 sum(1 + log s^2 - mu^2 - s^2);
- encoder: mean(R + KL); decoder: mean(lambda R - log(D(x_r) + 1e-8) - log(D(x_f) + 1e-8));
- discriminator: -mean(log(D(x) + 1e-8) + log(1 - D(x_r) + 1e-8) + log(1 - D(x_f) + 1e-8)).

One training step on a batch: one encoder update, one decoder update, ``n_dis`` discriminator updates,
noise drawn afresh for each. BatchNorm as the seed's TF graph: every network runs in training mode
(batch statistics, D applied separately to x, x_r and x_f), but an update only moves the running
statistics of the network it optimises (TF ties each scope's update ops to its own optimiser). The
CIFAR discriminator's spectral-norm state u advances once in every update that evaluates D (the
decoder's and each discriminator update), as the seed's ``u.assign`` runs with every D evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchmetrics import MeanMetric

from robustxai.methods.base import CheckpointMetadata
from robustxai.models.vaegan import KimVAEGAN, to_units
from robustxai.utils.validation import check_range

OptimizerFactory = Callable[..., torch.optim.Optimizer]
LOG_EPS = 1e-8  # the seed's guard inside every log


# -- the losses (per-example terms, then the seed's batch means) -----------------------------------
def reconstruction_l1(x: Tensor, x_rec: Tensor) -> Tensor:
    """R = sum over pixels and channels of |x - x_rec|, shape (N,)."""
    return (x - x_rec).abs().flatten(1).sum(dim=1)


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) = -1/2 sum(1 + logvar - mu^2 - exp(logvar)), shape (N,)."""
    return -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)


def encoder_loss(recon: Tensor, kl: Tensor) -> Tensor:
    """mean(R + KL)."""
    return (recon + kl).mean()


def decoder_loss(recon: Tensor, d_rec: Tensor, d_fake: Tensor, recon_weight: float) -> Tensor:
    """mean(lambda R - log(D(x_r) + 1e-8) - log(D(x_f) + 1e-8)): L1 plus non-saturating GAN terms."""
    return (recon_weight * recon - torch.log(d_rec + LOG_EPS) - torch.log(d_fake + LOG_EPS)).mean()


def discriminator_loss(d_real: Tensor, d_rec: Tensor, d_fake: Tensor) -> Tensor:
    """-mean(log(D(x) + 1e-8) + log(1 - D(x_r) + 1e-8) + log(1 - D(x_f) + 1e-8))."""
    return -(torch.log(d_real + LOG_EPS) + torch.log(1.0 - d_rec + LOG_EPS)
             + torch.log(1.0 - d_fake + LOG_EPS)).mean()


@contextmanager
def frozen_batchnorm_stats(*modules: nn.Module) -> Iterator[None]:
    """BatchNorm layers inside use batch statistics (in training mode) but leave their running ones alone."""
    layers = [m for module in modules for m in module.modules() if isinstance(m, _BatchNorm)]
    saved = [m.track_running_stats for m in layers]
    for m in layers:
        m.track_running_stats = False  # training mode: batch statistics, no running update, no counter
    try:
        yield
    finally:
        for m, flag in zip(layers, saved):
            m.track_running_stats = flag


class VAEGANTraining(CheckpointMetadata, L.LightningModule):
    """Trains a :class:`~robustxai.models.KimVAEGAN` with the seed's three optimisers and loss weights.

    ``optimizer`` is a factory (a Hydra partial) called once per network, encoder, decoder and
    discriminator, in that order. ``recon_weight`` is the decoder's lambda, ``n_dis`` the number of
    discriminator updates per batch. Under manual optimisation Lightning's ``global_step`` counts
    every optimiser step, i.e. 2 + n_dis per batch (mind ``trainer.max_steps``). Logged:
    ``train/{enc,dec,dis}_loss``, ``train/recon``, ``train/kl``, ``train/d_real``, ``train/d_rec``,
    ``train/d_fake``; ``{val,test}/recon`` and ``{val,test}/kl`` (per-example means, BN in inference mode).
    """

    def __init__(self, model: KimVAEGAN, optimizer: OptimizerFactory, recon_weight: float = 5e-3,
                 n_dis: int = 1) -> None:
        super().__init__()
        check_range("recon_weight", recon_weight, low=0.0)
        check_range("n_dis", n_dis, low=1)
        for part in ("encoder", "decoder", "discriminator"):
            if not isinstance(getattr(model, part, None), nn.Module):
                raise ValueError(  # noqa: TRY004 (a config error: model=...)
                    f"method=vaegan needs a VAE-GAN model with encoder, decoder and discriminator "
                    f"(model=kim_vaegan_mnist or kim_vaegan_cifar), got {type(model).__name__}")
        self.automatic_optimization = False
        self.model = model
        self.optimizer_factory = optimizer
        self.recon_weight, self.n_dis = float(recon_weight), int(n_dis)
        self.val_recon, self.val_kl = MeanMetric(), MeanMetric()
        self.test_recon, self.test_kl = MeanMetric(), MeanMetric()

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    # -- the three updates ------------------------------------------------------------------------
    def _posterior(self, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(mu, logvar, z) for a batch in seed units, z sampled afresh."""
        mu, logvar = self.model.encoder(s).chunk(2, dim=1)
        return mu, logvar, KimVAEGAN.sample(mu, logvar)

    def _prior(self, s: Tensor) -> Tensor:
        return torch.randn(s.shape[0], self.model.zdim, device=s.device, dtype=s.dtype)

    def discriminate(self, *batches: Tensor) -> list[Tensor]:
        """D's probabilities for each batch, as the seed's separate calls of D on x, x_r and x_f.

        A discriminator with BatchNorm (MNIST) sees each batch alone (its own batch statistics); one
        without (the CIFAR SN-GAN one) sees them in one pass, so its spectral norm takes one power
        iteration per update with one sigma for all three, as in the seed's graph (the three calls
        read the same u and write the same u').
        """
        d = self.model.discriminator
        if any(isinstance(m, _BatchNorm) for m in d.modules()):
            return [d(b).squeeze(1) for b in batches]
        return list(d(torch.cat(batches)).squeeze(1).split([b.shape[0] for b in batches]))

    def encoder_step_loss(self, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(encoder loss, R, KL) on a fresh sample; the decoder's running BN statistics stay put."""
        mu, logvar, z = self._posterior(s)
        with frozen_batchnorm_stats(self.model.decoder):
            rec = self.model.decoder(z)
        recon, kl = reconstruction_l1(s, rec), kl_divergence(mu, logvar)
        return encoder_loss(recon, kl), recon, kl

    def decoder_step_loss(self, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(decoder loss, D(x_r), D(x_f)); only the decoder's running BN statistics move."""
        m = self.model
        with frozen_batchnorm_stats(m.encoder):
            _, _, z = self._posterior(s)
        rec, fake = m.decoder(z), m.decoder(self._prior(s))
        with frozen_batchnorm_stats(m.discriminator):
            d_rec, d_fake = self.discriminate(rec, fake)
        return decoder_loss(reconstruction_l1(s, rec), d_rec, d_fake, self.recon_weight), d_rec, d_fake

    def discriminator_step_loss(self, s: Tensor) -> tuple[Tensor, Tensor]:
        """(discriminator loss, D(x)) on fresh reconstructions and prior samples."""
        m = self.model
        with torch.no_grad(), frozen_batchnorm_stats(m.encoder, m.decoder):
            _, _, z = self._posterior(s)
            rec, fake = m.decoder(z), m.decoder(self._prior(s))
        d_real, d_rec, d_fake = self.discriminate(s, rec, fake)
        return discriminator_loss(d_real, d_rec, d_fake), d_real

    def _update(self, optimizer: Any, loss_fn: Callable[[], tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
        """Compute a loss with only ``optimizer``'s parameters requiring grad, and step that optimiser."""
        self.toggle_optimizer(optimizer)
        try:
            out = loss_fn()
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(out[0])
            optimizer.step()
        finally:
            self.untoggle_optimizer(optimizer)
        return tuple(t.detach() for t in out)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, _ = batch
        s = to_units(x)
        opt_enc, opt_dec, opt_dis = self.optimizers()
        enc, recon, kl = self._update(opt_enc, lambda: self.encoder_step_loss(s))
        dec, d_rec, d_fake = self._update(opt_dec, lambda: self.decoder_step_loss(s))
        for _ in range(self.n_dis):
            dis, d_real = self._update(opt_dis, lambda: self.discriminator_step_loss(s))
        self.log_dict({"train/enc_loss": enc, "train/dec_loss": dec, "train/dis_loss": dis,
                       "train/kl": kl.mean(), "train/d_real": d_real.mean(), "train/d_rec": d_rec.mean(),
                       "train/d_fake": d_fake.mean()}, prog_bar=False)
        self.log("train/recon", recon.mean(), prog_bar=True)

    # -- evaluation: reconstruction quality with BN in inference mode ------------------------------
    def _eval_step(self, batch: tuple[Tensor, Tensor], stage: str, recon_metric: MeanMetric,
                   kl_metric: MeanMetric) -> None:
        x, _ = batch
        s = to_units(x)
        with torch.no_grad():
            mu, logvar, z = self._posterior(s)
            recon_metric.update(reconstruction_l1(s, self.model.decoder(z)))
            kl_metric.update(kl_divergence(mu, logvar))
        self.log(f"{stage}/recon", recon_metric, prog_bar=True)
        self.log(f"{stage}/kl", kl_metric)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_recon, self.val_kl)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_recon, self.test_kl)

    # -- optimisers (checkpoint metadata: CheckpointMetadata) -----------------------------------------
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        m = self.model
        return [self.optimizer_factory(params=part.parameters()) for part in (m.encoder, m.decoder, m.discriminator)]


__all__ = ["VAEGANTraining", "decoder_loss", "discriminator_loss", "encoder_loss", "frozen_batchnorm_stats",
           "kl_divergence", "reconstruction_l1"]
