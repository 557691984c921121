"""WoodsResNet (seed 001 ResNet-44) and the half-Huber ReLU: structure, keys, init, activation maths."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustxai.models.activations import HalfHuberReLU
from robustxai.models.woods_resnet import PreActBlock, WoodsResNet


def _expected_keys(half_huber: bool) -> set[str]:
    """The seed's state-dict key template (spec 1.6), written out independently of the model code."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"input_offset", "pipe.0.weight", "pipe.7.weight", "pipe.7.bias"} | {f"pipe.4.{k}" for k in bn}
    for s in (1, 2, 3):
        for b in range(7):
            p = f"pipe.{s}.{b}"
            keys |= {f"{p}.pre.0.{k}" for k in bn} | {f"{p}.main.1.{k}" for k in bn}
            keys |= {f"{p}.main.0.weight", f"{p}.main.3.weight"}
            if half_huber:
                keys |= {f"{p}.pre.1.d", f"{p}.main.2.d"}
    keys |= {"pipe.2.0.shortcut.weight", "pipe.3.0.shortcut.weight"}
    if half_huber:
        keys.add("pipe.5.d")
    return keys


@pytest.mark.parametrize("activation,count", [("relu", 263), ("half_huber", 306)])
def test_state_dict_keys_match_the_seed_template(activation: str, count: int) -> None:
    keys = set(WoodsResNet(activation).state_dict())
    assert keys == _expected_keys(activation == "half_huber")
    assert len(keys) == count


def test_parameter_count_and_per_part_counts() -> None:
    model = WoodsResNet("half_huber")
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(model) == 681_626
    assert [count(model.pipe[i]) for i in range(4)] == [432, 32_704, 129_888, 517_824]
    assert count(model.pipe[4]) + count(model.pipe[7]) == 778


def test_shapes_shortcuts_and_activation_modules() -> None:
    model = WoodsResNet("half_huber")
    assert model(torch.rand(3, 3, 32, 32)).shape == (3, 10)
    blocks = [m for m in model.modules() if isinstance(m, PreActBlock)]
    assert len(blocks) == 21 and sum(b.shortcut is not None for b in blocks) == 2
    assert sum(isinstance(m, HalfHuberReLU) for m in model.modules()) == 43
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert blocks[7].shortcut.kernel_size == (3, 3) and blocks[7].shortcut.stride == (2, 2)


def test_init_zeroes_last_conv_of_every_branch_and_bounds_kaiming_uniform() -> None:
    torch.manual_seed(0)
    model = WoodsResNet("relu")
    for block in (m for m in model.modules() if isinstance(m, PreActBlock)):
        assert torch.count_nonzero(block.main[3].weight) == 0
        w = block.main[0].weight
        bound = (6 / (w.shape[1] * 9)) ** 0.5
        assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert torch.count_nonzero(model.pipe[7].bias) == 0
    # zero-initialised branches: each block is the identity (or its shortcut) at init
    x = torch.randn(2, 16, 32, 32)
    assert torch.equal(model.pipe[1][0](x), x)


def test_normalisation_lives_inside_the_model() -> None:
    model = WoodsResNet("relu").eval()
    assert torch.allclose(model.input_offset, torch.tensor([[0.4914, 0.4822, 0.4465], [0.247, 0.243, 0.261]]))
    x = torch.rand(2, 3, 32, 32)
    inner = model.pipe((x - model.input_offset[0].view(1, 3, 1, 1)) / model.input_offset[1].view(1, 3, 1, 1))
    assert torch.equal(model(x), inner[:, :, 0, 0])


def test_constructor_arguments_filled_by_tasks_and_bad_values() -> None:
    model = WoodsResNet("relu", num_classes=5, in_channels=1, input_size=16)
    assert model(torch.rand(2, 1, 16, 16)).shape == (2, 5)
    with pytest.raises(ValueError, match="activation"):
        WoodsResNet("gelu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="32x32"):
        WoodsResNet("relu")(torch.rand(1, 3, 40, 40))
    with pytest.raises(ValueError, match="mean and std"):
        WoodsResNet("relu", in_channels=1, mean=(0.1, 0.2, 0.3))


def test_half_huber_relu_values_and_derivatives() -> None:
    act = HalfHuberReLU(0.5)
    x = torch.tensor([-1.0, 0.0, 0.25, 0.5, 2.0], dtype=torch.float64, requires_grad=True)
    assert torch.allclose(act(x), torch.tensor([0.0, 0.0, 0.0625, 0.25, 1.75], dtype=torch.float64))
    grad, = torch.autograd.grad(act(x).sum(), x, create_graph=True)
    assert torch.allclose(grad, (x.detach().clamp(0, 0.5) / 0.5))  # f'(x) = clamp(x, 0, delta) / delta
    second, = torch.autograd.grad(grad.sum(), x)
    assert torch.allclose(second, torch.tensor([0.0, 0.0, 2.0, 2.0, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("delta", [0.2, 0.5, 1.5])
def test_half_huber_is_c1_at_delta_for_any_delta(delta: float) -> None:
    """The seed's kernel is right only for delta 0.5; ours is continuous with a continuous slope for all."""
    act = HalfHuberReLU(delta)
    eps = 1e-6
    x = torch.tensor([delta - eps, delta + eps], dtype=torch.float64, requires_grad=True)
    y = act(x)
    assert abs(float(y[1] - y[0])) < 3 * eps
    grad, = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(grad, torch.ones(2, dtype=torch.float64), atol=1e-5)
    with pytest.raises(ValueError):
        HalfHuberReLU(0.0)
