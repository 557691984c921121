"""RARResNet: architecture, per-image standardisation, initialisation and padding (seed_rar.md 5.3/5.4)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustxai.models.rar_resnet import (ChannelPadShortcut, PreActUnit, RARResNet, SameConv2d,
                                         per_image_standardization, tf_same_pads)


def _conv_params(cin: int, cout: int) -> int:
    return 9 * cin * cout


def _expected_params(units: int, classes: int) -> int:
    """Hand count: init conv + per stage (first unit, then units-1 same-width units) + FC."""
    total = _conv_params(3, 16)
    for cin, cout in ((16, 16), (16, 32), (32, 64)):
        total += _conv_params(cin, cout) + _conv_params(cout, cout)
        total += (units - 1) * 2 * _conv_params(cout, cout)
    return total + 64 * classes + classes


@pytest.mark.parametrize("units,classes,size", [(2, 43, 32), (1, 17, 128)], ids=["gtsrb", "flower17"])
def test_shapes_and_parameter_count(units, classes, size):
    model = RARResNet(in_channels=3, num_classes=classes, input_size=size, units_per_stage=units)
    x = torch.rand(2, 3, size, size)
    assert model(x).shape == (2, classes)
    assert model.feature_map(x).shape == (2, 64, size // 4, size // 4)  # spatial sizes s -> s -> s/2 -> s/4
    assert sum(p.numel() for p in model.parameters()) == _expected_params(units, classes)
    assert len(model.units) == 3 * units


def test_no_batch_norm_and_leaky_relu_modules():
    model = RARResNet(units_per_stage=2)
    assert not any(isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm))
                   for m in model.modules())
    acts = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 2 * 6 + 1 and all(a.negative_slope == 0.1 for a in acts)
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))


def test_per_image_standardization_matches_the_tf_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 8, 8, generator=g, dtype=torch.float64) * 255
    x[3] = 7.0  # constant image: std 0 < 1/sqrt(N), the floor applies
    x[2] = 7.0 + 1e-3 * torch.randn(3, 8, 8, generator=g, dtype=torch.float64)  # tiny std, floored too
    n = 3 * 8 * 8
    expected = torch.stack([(im - im.mean()) / max(im.std(unbiased=False).item(), 1 / math.sqrt(n)) for im in x])
    torch.testing.assert_close(per_image_standardization(x), expected)
    assert torch.all(per_image_standardization(x)[3] == 0)


def test_output_is_invariant_to_positive_rescaling_above_the_std_floor():
    torch.manual_seed(0)
    model = RARResNet(units_per_stage=1, num_classes=5).double()
    x = torch.rand(3, 3, 32, 32, dtype=torch.float64)
    floor = 1 / math.sqrt(3 * 32 * 32)
    reference = model(x)
    for alpha in (0.01, 0.1, 0.5, 0.9):
        assert (alpha * 255 * x.flatten(1).std(dim=1, unbiased=False) >= floor).all()
        torch.testing.assert_close(model(alpha * x), reference, rtol=1e-9, atol=1e-9)
    tiny = 1e-6  # below the floor the standardisation no longer undoes the scale
    assert (tiny * 255 * x.flatten(1).std(dim=1, unbiased=False) < floor).all()
    assert not torch.allclose(model(tiny * x), reference, atol=1e-3)


def test_gradient_scales_as_one_over_alpha_and_is_finite_on_constant_images():
    torch.manual_seed(1)
    model = RARResNet(units_per_stage=1, num_classes=5).double()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)

    def grad(inp):
        inp = inp.clone().requires_grad_(True)
        model(inp)[:, 0].sum().backward()
        return inp.grad

    torch.testing.assert_close(grad(0.25 * x), grad(x) / 0.25)  # why IG equals 5.187 x grad*input (spec 2)
    assert torch.isfinite(grad(torch.full((1, 3, 16, 16), 0.5, dtype=torch.float64))).all()


def test_initialisation_statistics():
    torch.manual_seed(0)
    model = RARResNet(units_per_stage=2, num_classes=43)
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.weight.numel() > 10000:
            target = math.sqrt(2 / (9 * m.out_channels))
            assert abs(m.weight.std().item() / target - 1) < 0.05
            assert abs(m.weight.mean().item()) < 0.05 * target
    bound = math.sqrt(3 / 64)
    w = model.fc.weight
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    assert abs(w.std().item() / (bound / math.sqrt(3)) - 1) < 0.1
    assert torch.all(model.fc.bias == 0)


def test_tf_same_padding_puts_the_extra_pixel_after():
    # TF: total = max((ceil(n/s)-1)*s + k - n, 0), before = total//2
    assert tf_same_pads(32, 3, 2) == (0, 1) and tf_same_pads(33, 3, 2) == (1, 1)
    assert tf_same_pads(32, 3, 1) == (1, 1) and tf_same_pads(8, 3, 2) == (0, 1)
    conv = SameConv2d(1, 1, 3, stride=2, padding=0, bias=False)
    nn.init.ones_(conv.weight)
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 2, 2] = 1.0  # TF windows start at rows/cols 0, 2, 4, 6: pixel 2 is in windows 0 and 1 of each axis
    out = conv(x)
    assert out.shape == (1, 1, 4, 4) and out.sum() == 4 and out[0, 0, :2, :2].sum() == 4
    symmetric = F.conv2d(x, conv.weight, stride=2, padding=1)  # windows start at -1, 1, 3, 5: only window 1
    assert symmetric.shape == out.shape and symmetric.sum() == 1 and symmetric[0, 0, 1, 1] == 1


def test_shortcut_pools_and_pads_channels_in_the_middle():
    x = torch.randn(2, 16, 8, 8)
    out = ChannelPadShortcut(16, 32, 2)(x)
    assert out.shape == (2, 32, 4, 4)
    torch.testing.assert_close(out[:, 8:24], F.avg_pool2d(x, 2))
    assert torch.all(out[:, :8] == 0) and torch.all(out[:, 24:] == 0)


@pytest.mark.parametrize("before", [True, False])
def test_activate_before_residual_decides_what_the_shortcut_sees(before):
    unit = PreActUnit(16, 16, 1, activate_before_residual=before)
    for conv in (unit.conv1, unit.conv2):
        nn.init.zeros_(conv.weight)  # the unit output is then only the shortcut
    x = torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(unit(x), F.leaky_relu(x, 0.1) if before else x)


def test_weight_decay_groups_cover_conv_and_fc_weights_only():
    model = RARResNet(units_per_stage=2)
    names = model.decayed_parameter_names()
    all_names = {n for n, _ in model.named_parameters()}
    assert set(names) == all_names - {"fc.bias"}
    decayed, rest = model.parameter_groups(2e-4)
    assert decayed["weight_decay"] == 2e-4 and rest["weight_decay"] == 0.0
    assert len(decayed["params"]) + len(rest["params"]) == len(all_names) and rest["params"][0] is model.fc.bias
    torch.optim.SGD(model.parameter_groups(2e-4), lr=0.01, momentum=0.9)  # accepted by torch


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="units_per_stage"):
        RARResNet(units_per_stage=0)
    with pytest.raises(ValueError, match="pixel_scale"):
        RARResNet(pixel_scale=0)
