"""Attributions: equal to Captum (Saliency, InputXGradient, IG riemann_*), IG completeness, create_graph
derivatives against finite differences, chunking invariance, model state untouched, post-processing."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from robustxai.attributions import (InputXGradient, IntegratedGradients, Postprocess, Saliency, SmoothGrad,
                                    channel_sum, normalize_to_size, rar_saliency, riemann_alphas)

captum_attr = pytest.importorskip("captum.attr")

pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")


class SmoothConvNet(nn.Module):
    """Multi-channel conv net with smooth activations (non-zero input Hessian) for float64 checks."""

    def __init__(self, in_channels: int = 3, num_classes: int = 5, side: int = 6) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 4, 3, padding=1), nn.Softplus(), nn.AvgPool2d(2),
            nn.Flatten(), nn.Linear(4 * (side // 2) ** 2, 16), nn.Tanh(), nn.Linear(16, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def smooth_model(dtype: torch.dtype = torch.float64, in_channels: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return SmoothConvNet(in_channels).to(dtype).eval()


def smooth_batch(n: int = 5, channels: int = 3, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(3)
    return torch.rand(n, channels, 6, 6, generator=g, dtype=dtype), torch.randint(0, 5, (n,), generator=g)


def assert_close_rel(ours: torch.Tensor, theirs: torch.Tensor, rel: float) -> None:
    scale = theirs.abs().max().clamp_min(1e-30)
    err = (ours - theirs).abs().max() / scale
    assert err <= rel, f"max relative error {err.item():.3g} > {rel}"


# ----------------------------------------------------------------------------- Captum oracles

@pytest.mark.parametrize("dtype, rel", [(torch.float32, 1e-6), (torch.float64, 1e-14)])
def test_saliency_and_input_x_gradient_equal_captum(tiny_model, batch, dtype, rel):
    model = tiny_model.to(dtype)
    x, y = batch[0].to(dtype), batch[1]
    sal = Saliency()(model, x, y)
    assert sal.shape == x.shape and sal.dtype == dtype and (sal < 0).any()  # signed
    assert_close_rel(sal, captum_attr.Saliency(model).attribute(x.clone(), target=y, abs=False), rel)
    assert_close_rel(InputXGradient()(model, x, y),
                     captum_attr.InputXGradient(model).attribute(x.clone(), target=y), rel)


@pytest.mark.parametrize("rule", ["left", "right", "middle"])
@pytest.mark.parametrize("channels", [1, 3])
def test_integrated_gradients_equal_captum_riemann(rule, channels):
    model = smooth_model(in_channels=channels)
    x, y = smooth_batch(channels=channels)
    baseline = torch.rand(x.shape[1:], dtype=x.dtype, generator=torch.Generator().manual_seed(9)) * 0.3
    ours = IntegratedGradients(steps=16, rule=rule, baseline=baseline, max_points_per_pass=21)(model, x, y)
    theirs, delta = captum_attr.IntegratedGradients(model).attribute(
        x, baselines=baseline.expand_as(x), target=y, n_steps=16, method=f"riemann_{rule}",
        return_convergence_delta=True)
    # Captum builds its path points with float32 torch.linspace, ours exactly in float64:
    # agreement is at float32 resolution of the path positions (~1e-8 relative), not 1e-15.
    assert_close_rel(ours, theirs, 1e-6)
    f = lambda z: model(z).gather(1, y[:, None]).squeeze(1)  # noqa: E731
    ours_delta = ours.sum(dim=(1, 2, 3)) - (f(x) - f(baseline.expand_as(x)))
    torch.testing.assert_close(ours_delta, delta, rtol=1e-5, atol=1e-7)


def test_integrated_gradients_float32_relu_model_equal_captum(tiny_model, batch):
    x, y = batch
    ours = IntegratedGradients(steps=50, rule="right")(tiny_model, x, y)
    theirs = captum_attr.IntegratedGradients(tiny_model).attribute(x, target=y, n_steps=50,
                                                                   method="riemann_right")
    assert_close_rel(ours, theirs, 1e-5)


def test_riemann_alphas_are_captum_points():
    torch.testing.assert_close(riemann_alphas(4, "right"), torch.tensor([.25, .5, .75, 1.], dtype=torch.float64))
    torch.testing.assert_close(riemann_alphas(4, "left"), torch.tensor([0., .25, .5, .75], dtype=torch.float64))
    torch.testing.assert_close(riemann_alphas(4, "middle"), torch.tensor([.125, .375, .625, .875],
                                                                         dtype=torch.float64))


def test_smoothgrad_zero_noise_is_saliency_and_equals_captum_noise_tunnel():
    model = smooth_model()
    x, y = smooth_batch()
    ours = SmoothGrad(noise_level=0.0, samples=3)(model, x, y)
    theirs = captum_attr.NoiseTunnel(captum_attr.Saliency(model)).attribute(
        x, nt_type="smoothgrad", nt_samples=3, stdevs=0.0, target=y, abs=False)
    assert_close_rel(ours, theirs, 1e-14)
    assert_close_rel(ours, Saliency()(model, x, y), 1e-14)


def test_smoothgrad_is_mean_of_saliency_at_its_noisy_points():
    model = smooth_model()
    x, y = smooth_batch(n=3)
    ours = SmoothGrad(noise_level=0.2, samples=4, seed=5, max_points_per_pass=None)(model, x, y)
    noise = torch.randn((12,) + x.shape[1:], generator=torch.Generator().manual_seed(5), dtype=x.dtype)
    z = x.repeat_interleave(4, dim=0) + 0.2 * noise  # image-major points, as documented
    expected = captum_attr.Saliency(model).attribute(z, target=y.repeat_interleave(4), abs=False)
    assert_close_rel(ours, expected.view(3, 4, *x.shape[1:]).mean(dim=1), 1e-13)
    again = SmoothGrad(noise_level=0.2, samples=4, seed=5, max_points_per_pass=None)(model, x, y)
    assert torch.equal(ours, again)  # seeded: the same noise on every call
    assert not torch.equal(ours, SmoothGrad(noise_level=0.2, samples=4, seed=6)(model, x, y))


# ----------------------------------------------------------------------------- properties

def test_ig_completeness_converges_on_smooth_model():
    model = smooth_model()
    x, y = smooth_batch()
    f = lambda z: model(z).gather(1, y[:, None]).squeeze(1)  # noqa: E731
    target = f(x) - f(torch.zeros_like(x))
    gaps = []
    for steps in (4, 32, 256):
        ig = IntegratedGradients(steps=steps, rule="right", max_points_per_pass=None)(model, x, y)
        gaps.append((ig.sum(dim=(1, 2, 3)) - target).abs().max().item())
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-2 * target.abs().max().item()
    mid = IntegratedGradients(steps=256, rule="middle")(model, x, y)  # second-order rule
    assert (mid.sum(dim=(1, 2, 3)) - target).abs().max() < 1e-5 * target.abs().max()


def test_ig_zero_baseline_zero_where_input_is_zero(tiny_model, batch):
    x, y = batch
    x = x * (torch.rand_like(x) > 0.5)  # many exact zeros, as MNIST backgrounds
    ig = IntegratedGradients(steps=10)(tiny_model, x, y)
    assert (ig[x == 0] == 0).all()


@pytest.mark.parametrize("chunk", [1, 7, 40, None])
def test_ig_chunking_does_not_change_the_result(chunk):
    model = smooth_model()
    x, y = smooth_batch()
    reference = IntegratedGradients(steps=8, max_points_per_pass=None)(model, x, y)
    torch.testing.assert_close(IntegratedGradients(steps=8, max_points_per_pass=chunk)(model, x, y),
                               reference, rtol=1e-12, atol=1e-14)


def test_ig_scalar_and_tensor_baselines_agree():
    model = smooth_model()
    x, y = smooth_batch()
    a = IntegratedGradients(steps=8, baseline=0.25)(model, x, y)
    b = IntegratedGradients(steps=8, baseline=torch.full_like(x, 0.25))(model, x, y)
    c = IntegratedGradients(steps=8, baseline=torch.tensor(0.25, dtype=torch.float64))(model, x, y)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)


@pytest.mark.parametrize("make", [Saliency, InputXGradient, lambda: IntegratedGradients(steps=3),
                                  lambda: SmoothGrad(samples=2, seed=0)])
def test_model_mode_and_parameter_grads_untouched(make, tiny_model, batch):
    model = tiny_model.train()
    model.net[0].weight.requires_grad_(False)
    before = copy.deepcopy(model.state_dict())
    for create_graph in (False, True):
        maps = make()(model, *batch, create_graph=create_graph)
        assert maps.requires_grad == create_graph
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert not model.net[0].weight.requires_grad and model.net[0].bias.requires_grad
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_attributions_work_under_no_grad(tiny_model, batch):
    with torch.no_grad():
        maps = IntegratedGradients(steps=4)(tiny_model, *batch)
    torch.testing.assert_close(maps, IntegratedGradients(steps=4)(tiny_model, *batch))


def test_int_target_means_same_class_for_all(tiny_model, batch):
    x, _ = batch
    torch.testing.assert_close(Saliency()(tiny_model, x, 3),
                               Saliency()(tiny_model, x, torch.full((len(x),), 3)))


# ----------------------------------------------------------------------------- create_graph

@pytest.mark.parametrize("make", [Saliency, InputXGradient,
                                  lambda: IntegratedGradients(steps=5, rule="middle", max_points_per_pass=4),
                                  lambda: SmoothGrad(noise_level=0.1, samples=3, seed=1)])
def test_create_graph_input_derivative_matches_finite_differences(make):
    model = smooth_model()
    x, y = smooth_batch(n=2)
    attribution = make()
    x = x.requires_grad_()
    assert torch.autograd.gradcheck(lambda z: attribution(model, z, y, create_graph=True), (x,),
                                    eps=1e-6, atol=1e-6, rtol=1e-5)


def test_create_graph_through_rar_saliency_matches_finite_differences():
    model = smooth_model()
    x, y = smooth_batch(n=2)
    ig = IntegratedGradients(steps=6)
    weights = torch.rand(2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = x.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda z: (rar_saliency(ig(model, z, y, create_graph=True)) * weights).sum(), (x,),
        eps=1e-6, atol=1e-6, rtol=1e-5)


def test_create_graph_parameter_derivative_matches_central_differences():
    """The IG-NORM use: d(loss of the map)/d(parameters), checked along random directions."""
    model = smooth_model()
    x, y = smooth_batch(n=3)
    ig = IntegratedGradients(steps=6, max_points_per_pass=5)
    loss = lambda: ig(model, x, y, create_graph=True).pow(2).sum()  # noqa: E731
    params = list(model.parameters())
    grads = torch.autograd.grad(loss(), params, allow_unused=True)  # the last bias does not enter a gradient
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
        analytic = sum((gr * d).sum() for gr, d in zip(grads, direction))
        h = 1e-5
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(h * d)
        up = loss().detach()
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.sub_(2 * h * d)
        down = loss().detach()
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(h * d)
        torch.testing.assert_close(analytic, (up - down) / (2 * h), rtol=1e-6, atol=1e-9)


def test_create_graph_false_result_is_detached(tiny_model, batch):
    x = batch[0].clone().requires_grad_()
    assert not IntegratedGradients(steps=3)(tiny_model, x, batch[1]).requires_grad


# ----------------------------------------------------------------------------- post-processing

def test_rar_saliency_is_abs_channel_sum_normalised():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(4, 3, 5, 7, generator=g, dtype=torch.float64)
    s = rar_saliency(maps)
    raw = maps.abs().sum(dim=1)
    torch.testing.assert_close(s, 35 * raw / raw.sum(dim=(1, 2), keepdim=True))
    torch.testing.assert_close(s.sum(dim=(1, 2)), torch.full((4,), 35.0, dtype=torch.float64))
    torch.testing.assert_close(Postprocess()(maps), s)
    assert Postprocess(absolute=False, channels="keep", normalize="none")(maps) is maps
    assert Postprocess(channels="keep")(maps).shape == maps.shape


def test_all_zero_map_becomes_uniform_with_finite_gradient():
    maps = torch.zeros(2, 1, 3, 4, dtype=torch.float64)
    maps[1, 0, 0, 0] = 2.0
    maps.requires_grad_()
    s = rar_saliency(maps)
    assert torch.equal(s[0], torch.ones(3, 4, dtype=torch.float64))
    assert s[1, 0, 0] == 12 and s[1].sum() == 12
    s.sum().backward()
    assert torch.isfinite(maps.grad).all()


def test_postprocess_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        channel_sum(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="batched"):
        normalize_to_size(torch.zeros(3))
    with pytest.raises(ValueError, match="channels"):
        Postprocess(channels="mean")


# ----------------------------------------------------------------------------- input errors

def test_bad_arguments_get_clear_errors(tiny_model, batch):
    x, y = batch
    with pytest.raises(ValueError, match="rule"):
        IntegratedGradients(rule="trapezoid")
    with pytest.raises(ValueError, match="steps"):
        IntegratedGradients(steps=0)
    with pytest.raises(ValueError, match="max_points_per_pass"):
        IntegratedGradients(max_points_per_pass=0)
    with pytest.raises(ValueError, match="noise_level"):
        SmoothGrad(noise_level=-1.0)
    with pytest.raises(ValueError, match="target must have shape"):
        Saliency()(tiny_model, x, y[:3])
    with pytest.raises(TypeError, match="integer tensor"):
        Saliency()(tiny_model, x, y.float())
    with pytest.raises(ValueError, match="cannot be broadcast"):
        IntegratedGradients(baseline=torch.zeros(2, 2))(tiny_model, x, y)
    with pytest.raises(TypeError, match="floating-point"):
        Saliency()(tiny_model, x.to(torch.uint8), y)


@pytest.mark.parametrize("name", ["saliency", "input_x_gradient", "integrated_gradients", "smooth_grad"])
def test_attribution_configs_validate_and_build(name, tiny_model, batch):
    from omegaconf import OmegaConf

    from robustxai.utils.config import instantiate, validate_config
    root = Path(__file__).resolve().parents[1]
    cfg = OmegaConf.create({"attribution": OmegaConf.load(root / "conf" / "attribution" / f"{name}.yaml"),
                            "threat": {"explanation": {"ig_steps": 4}}})
    validate_config(cfg)
    attribution = instantiate(cfg.attribution, "attribution")
    if name == "integrated_gradients":
        assert attribution.steps == 4 and attribution.rule == "right" and attribution.baseline == 0.0
    assert attribution(tiny_model, *batch).shape == batch[0].shape
