"""Kim et al.'s VAE-GAN: TF SAME padding, the conv-operator spectral norm, the losses, the three updates."""

from __future__ import annotations

import copy
import math
from functools import partial
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from robustxai.data.base import TensorLoader
from robustxai.methods.vaegan import (
    VAEGANTraining,
    decoder_loss,
    discriminator_loss,
    encoder_loss,
    frozen_batchnorm_stats,
    kl_divergence,
    reconstruction_l1,
)
from robustxai.models.vaegan import (
    KimVAEGAN,
    SNConv2d,
    conv_operator,
    conv_operator_transpose,
    same_padding,
)
from robustxai.utils.checkpoint import load_checkpoint, load_model_weights

ROOT = Path(__file__).resolve().parents[1]


def dense_matrix(weight: torch.Tensor, stride: int, pads: tuple[int, int, int, int],
                 shape: tuple[int, int, int]) -> torch.Tensor:
    """The convolution as an explicit (D_out, D_in) matrix, built column by column from basis images."""
    d_in = math.prod(shape)
    basis = torch.eye(d_in, dtype=torch.float64).view(d_in, *shape)
    return conv_operator(basis, weight.double(), stride, pads).flatten(1).T


# -- architecture ---------------------------------------------------------------------------------
@pytest.mark.parametrize("size, kernel, stride, expected", [
    (28, 4, 2, (1, 1)), (7, 4, 2, (1, 2)), (14, 4, 2, (1, 1)), (4, 4, 2, (1, 1)),
    (32, 5, 2, (1, 2)), (32, 3, 1, (1, 1)), (5, 3, 2, (1, 1)), (6, 3, 2, (0, 1)),
])
def test_same_padding_is_tfs(size, kernel, stride, expected):
    # TF: out = ceil(size / stride), total = max((out - 1) * stride + kernel - size, 0), the odd one after
    assert same_padding(size, kernel, stride) == expected


@pytest.mark.parametrize("variant, shape, zdim", [("mnist", (1, 28, 28), 10), ("cifar", (3, 32, 32), 128)])
def test_shapes_and_box(variant, shape, zdim):
    torch.manual_seed(0)
    model = KimVAEGAN(variant).eval()
    x = torch.rand(3, *shape)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (3, zdim)
    assert model.discriminate(x).shape == (3,)
    assert model.encoder[:-3](x).shape[1:] == (256, 4, 4)  # 28 -> 14 -> 7 -> 4 (TF pads 7 as 1 + 2)
    rec = model(x)
    assert rec.shape == x.shape and rec.min() >= 0 and rec.max() <= 1
    assert torch.equal(model(x, generator=torch.Generator().manual_seed(3)),
                       model(x, generator=torch.Generator().manual_seed(3)))


def test_tf_defaults_bn_and_glorot():
    model = KimVAEGAN("mnist")
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and all(m.momentum == 0.01 and m.eps == 1e-3 for m in bns)
    conv = model.encoder[0]
    bound = math.sqrt(6.0 / (1 * 16 + 64 * 16))  # Glorot uniform: fan_in = 1*4*4, fan_out = 64*4*4
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound
    assert torch.count_nonzero(conv.bias) == 0
    assert not any(isinstance(m, SNConv2d) for m in model.modules())
    assert sum(isinstance(m, SNConv2d) for m in KimVAEGAN("cifar").discriminator) == 7


def test_wrong_input_size_is_refused():
    with pytest.raises(ValueError, match="input_size"):
        KimVAEGAN("cifar", input_size=28)
    with pytest.raises(ValueError, match="variant"):
        KimVAEGAN("svhn")


# -- the spectral norm of the convolution operator -----------------------------------------------
@pytest.mark.parametrize("shape, kernel, stride", [((2, 5, 5), 3, 1), ((2, 7, 7), 4, 2), ((3, 5, 5), 3, 2),
                                                   ((1, 8, 8), 5, 2), ((2, 6, 6), 4, 2)])
def test_conv_transpose_is_the_adjoint_of_the_dense_operator(shape, kernel, stride):
    torch.manual_seed(0)
    weight = torch.randn(3, shape[0], kernel, kernel, dtype=torch.float64)
    conv = SNConv2d(shape[0], 3, kernel, stride, input_size=shape[1])
    pads = conv.pads(*shape[1:])
    matrix = dense_matrix(weight, stride, pads, shape)
    u = torch.randn(2, *shape, dtype=torch.float64)
    out = conv_operator(u, weight, stride, pads)
    torch.testing.assert_close(out.flatten(1), u.flatten(1) @ matrix.T)
    v = torch.randn_like(out)
    back = conv_operator_transpose(v, weight, stride, pads, shape[1:])
    assert back.shape == u.shape
    torch.testing.assert_close(back.flatten(1), v.flatten(1) @ matrix)


def test_power_iteration_is_the_dense_operators_and_converges_to_its_norm_not_the_kernel_matrix_norm():
    torch.manual_seed(1)
    conv = SNConv2d(2, 3, 4, 2, input_size=7)  # 7 -> 4: TF pads 1 before, 2 after
    matrix = dense_matrix(conv.weight.detach(), 2, conv.pads(7, 7), (2, 7, 7))
    sigma_true = torch.linalg.svdvals(matrix)[0].item()
    sigma_kernel = torch.linalg.svdvals(conv.weight.detach().flatten(1))[0].item()  # torch's spectral_norm
    u = conv.u.flatten().double()
    for _ in range(30):  # the same power iteration on the explicit matrix, from the same start
        v = matrix @ u
        v = v / v.norm()
        u = matrix.T @ v
        u = u / u.norm()
        sigma_dense = float(v @ (matrix @ u))
        assert conv.sigma().item() == pytest.approx(sigma_dense, rel=1e-5)
        conv.power_iteration(1)
        torch.testing.assert_close(conv.u.flatten().double(), u, atol=1e-5, rtol=0)
        assert sigma_dense <= sigma_true * (1 + 1e-9)  # <v, A u'> = ||A^T v||: a lower bound
    conv.power_iteration(500)
    assert conv.sigma().item() == pytest.approx(sigma_true, rel=1e-5)
    assert abs(sigma_kernel - sigma_true) > 0.05 * sigma_true


@pytest.mark.parametrize("scale, beta", [(10.0, 1.0), (10.0, 0.5), (1e-3, 1.0)])
def test_kernel_is_divided_by_max_sigma_over_beta_and_one(scale, beta):
    torch.manual_seed(2)
    conv = SNConv2d(2, 4, 3, 1, input_size=6, beta=beta)
    with torch.no_grad():
        conv.weight.mul_(scale)
    conv.power_iteration(1000)
    w = conv.normalised_weight().detach()
    sigma = torch.linalg.svdvals(dense_matrix(conv.weight.detach(), 1, conv.pads(6, 6), (2, 6, 6)))[0].item()
    sigma_after = torch.linalg.svdvals(dense_matrix(w, 1, conv.pads(6, 6), (2, 6, 6)))[0].item()
    if sigma > beta:
        assert beta * (1 - 1e-6) <= sigma_after <= beta * (1 + 1e-3)  # sigma is estimated from below
    else:
        assert torch.equal(w, conv.weight.detach())  # only shrunk when sigma > beta


def test_sn_forward_takes_one_power_step_in_training_only_and_uses_the_normalised_kernel():
    torch.manual_seed(3)
    conv = SNConv2d(2, 3, 4, 2, input_size=8)
    with torch.no_grad():
        conv.weight.mul_(5.0)  # sigma > 1, so the kernel is shrunk
    x = torch.randn(4, 2, 8, 8)
    ref = copy.deepcopy(conv).eval()
    out = conv(x)
    sigma, u_next = ref.iterate()
    assert sigma > 1
    torch.testing.assert_close(conv.u, u_next.detach())  # one step, stored (the seed's u.assign)
    expected = F.conv2d(F.pad(x, conv.pads(8, 8)), ref.weight / sigma, conv.bias, stride=2)
    torch.testing.assert_close(out, expected)
    conv.eval()
    u1 = conv.u.clone()
    conv(x)
    assert torch.equal(conv.u, u1)
    out.sum().backward()  # differentiable through sigma and the kernel
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()
    with pytest.raises(ValueError, match="input_size"):
        conv(torch.randn(1, 2, 6, 6))


# -- the losses, on hand-computed cases -----------------------------------------------------------
def test_reconstruction_l1_and_kl_by_hand():
    x = torch.tensor([[[0.5, -1.0]], [[1.0, 1.0]]])      # (N=2, 1, 2), seed units
    rec = torch.tensor([[[0.0, 1.0]], [[1.0, 0.25]]])
    torch.testing.assert_close(reconstruction_l1(x, rec), torch.tensor([2.5, 0.75]))
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # -1/2 [(1 + 0 - 1 - 1) + (1 + log 2 - 0 - 2)] = 1 - log(2) / 2; the prior itself has KL 0
    torch.testing.assert_close(kl_divergence(mu, logvar), torch.tensor([1 - math.log(2) / 2, 0.0]))
    torch.testing.assert_close(encoder_loss(torch.tensor([2.5, 0.75]), torch.tensor([1.0, 0.0])),
                               torch.tensor((3.5 + 0.75) / 2))


def test_decoder_and_discriminator_losses_by_hand():
    recon, d_rec, d_fake = torch.tensor([2.0, 4.0]), torch.tensor([0.5, 0.25]), torch.tensor([1.0, 0.5])
    per_example = [0.1 * 2 - math.log(0.5 + 1e-8) - math.log(1 + 1e-8),
                   0.1 * 4 - math.log(0.25 + 1e-8) - math.log(0.5 + 1e-8)]
    torch.testing.assert_close(decoder_loss(recon, d_rec, d_fake, 0.1), torch.tensor(sum(per_example) / 2))
    loss = discriminator_loss(torch.tensor([0.8, 1.0]), torch.tensor([0.3, 0.0]), torch.tensor([0.1, 0.0]))
    expected = -((math.log(0.8) + math.log(0.7) + math.log(0.9)) + (math.log(1 + 1e-8) + 2 * math.log(1 + 1e-8))) / 2
    torch.testing.assert_close(loss, torch.tensor(expected))
    # the 1e-8 guard keeps a saturated discriminator finite: -log(0 + 1e-8) = 8 log 10
    torch.testing.assert_close(decoder_loss(torch.zeros(1), torch.zeros(1), torch.ones(1), 1.0),
                               torch.tensor(8 * math.log(10) - math.log(1 + 1e-8)))


def test_frozen_batchnorm_stats_uses_batch_statistics_without_moving_the_running_ones():
    bn = torch.nn.BatchNorm1d(3, momentum=0.5)
    x = torch.randn(16, 3) * 3 + 2
    with frozen_batchnorm_stats(bn):
        out = bn(x)
    assert torch.equal(bn.running_mean, torch.zeros(3)) and int(bn.num_batches_tracked) == 0
    torch.testing.assert_close(out, (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + bn.eps))
    bn(x)
    assert not torch.equal(bn.running_mean, torch.zeros(3)) and bn.track_running_stats


# -- training: each update touches its own network, with its own optimiser -----------------------
class SpyTraining(VAEGANTraining):
    """Records, for every update, which optimiser stepped, which state-dict entries changed, and
    whether each spectral-norm state u took exactly the one power step expected of it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.updates: list[tuple[int, set[str], bool | None]] = []

    def _sn_layers(self) -> list[SNConv2d]:
        return [m for m in self.model.modules() if isinstance(m, SNConv2d)]

    def _update(self, optimizer, loss_fn):
        before = {k: v.clone() for k, v in self.model.state_dict().items()}
        with torch.no_grad():
            stepped = [layer.iterate()[1] for layer in self._sn_layers()]  # one step from u, current kernel
        out = super()._update(optimizer, loss_fn)
        changed = {k for k, v in self.model.state_dict().items() if not torch.equal(before[k], v)}
        index = [o is optimizer.optimizer for o in self.trainer.optimizers].index(True)
        one_step = all(torch.allclose(layer.u, u, atol=1e-6) for layer, u in zip(self._sn_layers(), stepped)) \
            if stepped else None
        self.updates.append((index, changed, one_step))
        return out


def _trainer(tmp_path: Path, max_steps: int) -> L.Trainer:
    return L.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)


def _loader(shape: tuple[int, int, int], n: int = 8) -> TensorLoader:
    g = torch.Generator().manual_seed(0)
    return TensorLoader(torch.rand(n, *shape, generator=g), torch.zeros(n, dtype=torch.long), batch_size=n)


@pytest.mark.parametrize("variant, shape", [("mnist", (1, 28, 28)), ("cifar", (3, 32, 32))])
def test_one_training_step_changes_each_network_with_its_own_optimiser(tmp_path, variant, shape):
    torch.manual_seed(0)
    model = KimVAEGAN(variant, zdim=8)
    method = SpyTraining(model, partial(torch.optim.Adam, lr=1e-3, betas=(0.5, 0.9)), recon_weight=0.1, n_dis=2)
    _trainer(tmp_path, max_steps=4).fit(method, train_dataloaders=_loader(shape))  # 4 optimiser steps = 1 batch
    assert [i for i, _, _ in method.updates] == [0, 1, 2, 2]  # encoder, decoder, n_dis x discriminator
    sn_state = {k for k in model.state_dict() if k.startswith("discriminator.") and k.endswith(".u")}
    assert bool(sn_state) == (variant == "cifar")
    for (index, changed, one_step), part in zip(method.updates, ("encoder", "decoder", "discriminator",
                                                                 "discriminator")):
        own = {f"{part}.{k}" for k in getattr(model, part).state_dict()}
        # updates that evaluate D also advance its spectral-norm state u, as the seed's u.assign does
        allowed = own | (sn_state if part == "decoder" else set())
        assert changed <= allowed, f"{part} update changed {sorted(changed - allowed)[:4]}"
        params = {f"{part}.{k}" for k, _ in getattr(model, part).named_parameters()}
        assert params <= changed  # every parameter of the network moved
        running = {k for k in own if k.endswith("running_mean")}
        assert running <= changed  # the network's own BN running statistics moved (TF's update ops)
        if variant == "cifar":
            assert (sn_state <= changed) == (part != "encoder")
            assert one_step == (part != "encoder")  # one power step per update that evaluates D
    optimisers = method.trainer.optimizers
    for opt, part in zip(optimisers, ("encoder", "decoder", "discriminator")):
        assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in getattr(model, part).parameters()}
        assert opt.param_groups[0]["betas"] == (0.5, 0.9)


def test_config_checkpoint_round_trip(tmp_path):
    node = OmegaConf.load(ROOT / "conf" / "method" / "vaegan.yaml")
    model_node = OmegaConf.load(ROOT / "conf" / "model" / "kim_vaegan_mnist.yaml")
    torch.manual_seed(0)
    model = hydra.utils.instantiate(model_node, in_channels=1, input_size=28)
    method = hydra.utils.instantiate(node, model=model)
    assert (method.recon_weight, method.n_dis) == (5e-3, 1)
    trainer = _trainer(tmp_path, max_steps=3)
    trainer.fit(method, train_dataloaders=_loader((1, 28, 28)))
    path = tmp_path / "vaegan.ckpt"
    trainer.save_checkpoint(path)
    ckpt = load_checkpoint(path)  # weights_only=True: nothing but tensors and plain containers inside
    assert len(ckpt["optimizer_states"]) == 3
    assert tuple(ckpt["optimizer_states"][0]["param_groups"][0]["betas"]) == (0.5, 0.9)
    assert ckpt["robustxai"]["model_class"] == "robustxai.models.vaegan.KimVAEGAN"
    fresh = KimVAEGAN("mnist")
    load_model_weights(fresh, path)
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    x = torch.rand(4, 1, 28, 28)
    model.eval(), fresh.eval()
    torch.testing.assert_close(fresh(x, generator=torch.Generator().manual_seed(0)),
                               model(x, generator=torch.Generator().manual_seed(0)))


def test_method_refuses_a_classifier():
    with pytest.raises(ValueError, match="kim_vaegan"):
        VAEGANTraining(torch.nn.Linear(2, 2), partial(torch.optim.Adam))


def test_batchnorm_recalibration_gives_exact_averages_and_restores_the_settings():
    torch.manual_seed(0)
    model = KimVAEGAN("mnist").eval()
    x = torch.rand(12, 1, 28, 28)
    model.recalibrate_batchnorm(x, batch_size=6)
    assert not model.training and all(m.momentum == 0.01 for m in model.modules()
                                      if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    with torch.no_grad():
        features = model.encoder[1](model.encoder[0](x * 2 - 1))  # what the first BN normalises
    # two batches of 6, cumulative averaging: the mean of the two batch means = the mean over all 12
    torch.testing.assert_close(model.encoder[2].running_mean, features.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    assert int(model.encoder[2].num_batches_tracked) == 2
    assert int(model.decoder[2].num_batches_tracked) == 4  # a posterior and a prior sample per batch
    assert int(model.discriminator[4].num_batches_tracked) == 0  # D untouched
