"""CAM, Grad-CAM, Grad-CAM++ and the softplus-surrogate wrapper: identities on GAP nets and pytorch-grad-cam as oracle.

pytorch-grad-cam returns relu(sum_k w_k A_k), min-max scaled per image ((m - min) / (1e-7 + max)),
OpenCV-resized to the input, clipped at 0 and min-max scaled again; our maps are the raw sums, so the
tests apply that same post-processing to ours (``relu=True``) and compare the same quantity.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from robustxai.attacks.surrogate import softplus_surrogate
from robustxai.attributions import (CAM, GradCAM, GradCAMPlusPlus, IntegratedGradients, Saliency,
                                    SmoothGrad, SurrogateAttribution)
from robustxai.attributions.cam import upsample_maps
from robustxai.models import BoopathyNet, load_boopathy_network
from tests.conftest import ROOT, TinyConvNet

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

NETWORKS = ROOT.parent / "shared" / "models" / "boopathy-networks"


def gap_net(arch: str = "small", channels: int = 1, dtype: torch.dtype = torch.float32, seed: int = 0) -> BoopathyNet:
    torch.manual_seed(seed)
    return BoopathyNet(arch, channels, 10).to(dtype).eval()


def inputs(n: int, channels: int, side: int, dtype: torch.dtype = torch.float32, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, channels, side, side, generator=g, dtype=dtype),
            torch.randint(0, 10, (n,), generator=g))


def oracle_postprocess(maps: torch.Tensor, size: tuple[int, int] | None) -> np.ndarray:
    """pytorch-grad-cam's post-processing of relu'd (N, h, w) maps, in float32 like it."""
    def minmax(m: torch.Tensor) -> torch.Tensor:
        m = m - m.amin((1, 2), keepdim=True)
        return m / (1e-7 + m.amax((1, 2), keepdim=True))
    out = minmax(maps.float())
    if size is not None:
        out = upsample_maps(out, size, "bilinear")
    return minmax(out.clamp(min=0)).numpy()


class _FeatureResolution:
    """Mixin: pytorch-grad-cam without its final resize (maps stay at the layer's resolution)."""

    def get_target_width_height(self, input_tensor):
        return None


def run_oracle(kind: str, model: torch.nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor,
               resize: bool) -> np.ndarray:
    base = {"gradcam": pytorch_grad_cam.GradCAM, "gradcam_pp": pytorch_grad_cam.GradCAMPlusPlus}[kind]
    cls = base if resize else type("FeatureRes" + base.__name__, (_FeatureResolution, base), {})
    with cls(model=model, target_layers=[model.get_submodule(layer)]) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in y])


# ----------------------------------------------------------------------------------------------
# CAM


def test_cam_is_the_target_class_map_of_model_cam():
    net = gap_net()
    x, y = inputs(5, 1, 28)
    maps = CAM()(net, x, y)
    assert maps.shape == (5, 7, 7) and not maps.requires_grad
    full = net.cam(x)
    assert torch.equal(maps, full[torch.arange(5), y])
    assert (maps < 0).any()  # raw and signed: no ReLU, no normalisation
    torch.testing.assert_close(maps.mean((1, 2)), net(x)[torch.arange(5), y])
    up = CAM(upsample="nearest")(net, x, y)
    assert up.shape == (5, 28, 28) and torch.equal(up, maps.repeat_interleave(4, 1).repeat_interleave(4, 2))
    assert CAM(upsample="bilinear")(net, x, y).shape == (5, 28, 28)


def test_cam_with_create_graph_is_differentiable_in_x_and_the_parameters():
    net = gap_net("small", 1, torch.float64)
    x = torch.rand(2, 1, 12, 12, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([3, 7])
    maps = CAM()(net, x, y, create_graph=True)
    maps.sum().backward()
    assert x.grad is not None and net.head.weight.grad is not None and net.features[0].conv.weight.grad is not None
    assert torch.autograd.gradcheck(lambda t: CAM()(net, t, y, create_graph=True), (x.detach().requires_grad_(),))


def test_cam_needs_a_gap_network():
    x, y = inputs(2, 1, 12)
    with pytest.raises(ValueError, match=r"has no cam\(\) method .* use GradCAM\(layer=\.\.\.\)"):
        CAM()(TinyConvNet(), x, y)
    with pytest.raises(ValueError, match="upsample must be None"):
        CAM(upsample="bicubic")


# ----------------------------------------------------------------------------------------------
# Grad-CAM and Grad-CAM++ on GAP networks: identities


@pytest.mark.parametrize("arch,channels,side,layer", [("small", 1, 28, "features"), ("small", 1, 28, "features.2"),
                                                      ("pool", 1, 28, "features.3"), ("wresnet", 3, 32, "features")])
def test_gradcam_of_the_last_map_of_a_gap_net_is_cam_over_hw(arch, channels, side, layer):
    net = gap_net(arch, channels, torch.float64)
    x, y = inputs(3, channels, side, torch.float64)
    cam = CAM()(net, x, y)
    torch.testing.assert_close(GradCAM(layer)(net, x, y), cam / cam[0].numel(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(GradCAM(layer, relu=True)(net, x, y), cam.clamp(min=0) / cam[0].numel())


def test_closed_form_gradcam_pp_is_cam_with_the_negative_head_weights_zeroed():
    net = gap_net("small", 1, torch.float64)
    x, y = inputs(4, 1, 28, torch.float64)
    v = net.head.weight[:, :, 0, 0]  # C x K
    a = net.features(x)
    expected = torch.einsum("nk,nkhw->nhw", v[y].clamp(min=0), a)
    torch.testing.assert_close(GradCAMPlusPlus()(net, x, y), expected.detach(), rtol=1e-12, atol=1e-12)
    assert GradCAMPlusPlus().layer is None and GradCAMPlusPlus(upsample="nearest")(net, x, y).shape == (4, 28, 28)
    with pytest.raises(ValueError, match=r"no cam_plusplus\(\) method"):
        GradCAMPlusPlus()(TinyConvNet(), *inputs(2, 1, 12))


def test_general_gradcam_pp_on_a_gap_net_against_the_closed_form():
    """g = V[k, y] / (h w) per channel, so the general weights are relu(V) / (2 + mean(A_k) V) (eps = 0): the
    closed form's relu(V) up to that per-channel factor, and closed form / 2 in the limit of a small head."""
    net = gap_net("small", 1, torch.float64)
    x, y = inputs(4, 1, 28, torch.float64)
    a = net.features(x).detach()
    v = net.head.weight[:, :, 0, 0].detach()[y]  # N x K
    exact = torch.einsum("nk,nkhw->nhw", v.clamp(min=0) / (2 + a.mean((2, 3)) * v), a)
    general = GradCAMPlusPlus("features", eps=0.0)(net, x, y)
    torch.testing.assert_close(general, exact, rtol=1e-10, atol=1e-12)
    closed = GradCAMPlusPlus()(net, x, y)
    assert not torch.allclose(general, closed / 2, rtol=1e-2)  # not equal at the trained/initial scale
    with torch.no_grad():
        net.head.weight.mul_(1e-4)
    general = GradCAMPlusPlus("features", eps=0.0)(net, x, y)
    torch.testing.assert_close(general, GradCAMPlusPlus()(net, x, y) / 2, rtol=1e-3, atol=0)


# ----------------------------------------------------------------------------------------------
# pytorch-grad-cam as the oracle


def _oracle_cases():
    cases = [("small", "features.0"), ("small", "features.1"), ("small", "features"), ("pool", "features.1"),
             ("wresnet", "features.12"), ("tiny", "net.1")]
    return [(kind, arch, layer) for kind in ("gradcam", "gradcam_pp") for arch, layer in cases]


@pytest.mark.parametrize("kind,arch,layer", _oracle_cases())
def test_gradcam_equals_pytorch_grad_cam(kind, arch, layer):
    if arch == "tiny":
        torch.manual_seed(0)
        model, (x, y), side = TinyConvNet().eval(), inputs(6, 1, 12), 12
    else:
        channels = 3 if arch == "wresnet" else 1
        side = 32 if arch == "wresnet" else 28
        model, (x, y) = gap_net(arch, channels), inputs(6, channels, side)
    ours_cls = GradCAM if kind == "gradcam" else GradCAMPlusPlus
    ours = ours_cls(layer, relu=True)(model, x, y)
    before = copy.deepcopy(model.state_dict())
    reference = run_oracle(kind, model, layer, x, y, resize=False)
    assert reference.shape == tuple(ours.shape)
    np.testing.assert_allclose(oracle_postprocess(ours, None), reference, rtol=0, atol=2e-5)
    full = run_oracle(kind, model, layer, x, y, resize=True)
    assert full.shape == (6, side, side)
    np.testing.assert_allclose(oracle_postprocess(ours, (side, side)), full, rtol=0, atol=2e-5)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_gradcam_equals_pytorch_grad_cam_on_a_released_network():
    path = NETWORKS / "mnist_smallgap_normal_100.pkl"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    net = load_boopathy_network(path)
    x, _ = inputs(8, 1, 28)
    x = (x > 0.7).float()
    y = net(x).argmax(1)
    for kind, cls in (("gradcam", GradCAM), ("gradcam_pp", GradCAMPlusPlus)):
        for layer in ("features.1", "features"):
            ours = cls(layer, relu=True)(net, x, y)
            np.testing.assert_allclose(oracle_postprocess(ours, (28, 28)), run_oracle(kind, net, layer, x, y, True),
                                       rtol=0, atol=2e-5)


# ----------------------------------------------------------------------------------------------
# the contract: differentiable, model untouched, layers resolved per call, clear errors


def test_gradcam_is_differentiable_and_leaves_the_model_alone():
    net = gap_net("small", 1, torch.float64)
    net.train()
    x = torch.rand(2, 1, 12, 12, dtype=torch.float64)
    y = torch.tensor([1, 4])
    for attribution in (GradCAM("features.1"), GradCAMPlusPlus("features.1"), GradCAM("features", upsample="bilinear")):
        maps = attribution(net, x, y)
        assert not maps.requires_grad and all(p.grad is None for p in net.parameters()) and net.training
        xg = x.clone().requires_grad_()
        attribution(net, xg, y, create_graph=True).sum().backward()
        assert xg.grad is not None and net.features[1].conv.weight.grad is not None
        net.zero_grad(set_to_none=True)
    # the map is smooth in x between ReLU kinks: finite differences agree
    gc = GradCAMPlusPlus("features.1")
    assert torch.autograd.gradcheck(lambda t: gc(net, t, y, create_graph=True), (x.clone().requires_grad_(),))


def test_gradcam_maps_are_per_image():
    net = gap_net()
    x, y = inputs(6, 1, 28)
    both = GradCAMPlusPlus("features.1")(net, x, y)
    alone = torch.cat([GradCAMPlusPlus("features.1")(net, x[i:i + 1], y[i:i + 1]) for i in range(6)])
    torch.testing.assert_close(both, alone, rtol=1e-5, atol=1e-6)


def test_layer_errors_are_clear():
    net = gap_net()
    x, y = inputs(2, 1, 28)
    with pytest.raises(ValueError, match=r"layer 'features.9' is not a submodule of BoopathyNet; its layers are: "
                                         r"features, features.0"):
        GradCAM("features.9")(net, x, y)
    with pytest.raises(ValueError, match=r"layer '1' must output an \(N, K, h, w\) tensor, got \(2, 10\)"):
        GradCAM("1")(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)), x, y)
    shared = torch.nn.Conv2d(1, 1, 3, padding=1)
    twice = torch.nn.Sequential(shared, shared, torch.nn.Flatten(), torch.nn.Linear(784, 10))
    with pytest.raises(ValueError, match="ran 2 times"):
        GradCAM("0")(twice, x, y)
    with pytest.raises(ValueError, match="layer must name a submodule"):
        GradCAM("")
    with pytest.raises(ValueError, match="eps must be a number >= 0"):
        GradCAMPlusPlus("features", eps=-1)


# ----------------------------------------------------------------------------------------------
# the softplus surrogate wrapper (seed 000's IG) and points_per_input


def test_seed_ig_is_ig_of_the_softplus_network():
    net = gap_net("small", 1, torch.float64)
    x, y = inputs(3, 1, 12, torch.float64)
    seed_ig = SurrogateAttribution(IntegratedGradients(steps=100, rule="right"))
    maps = seed_ig(net, x, y)
    # written out: x * (1/100) sum_m d z~_y / du at u = (m / 100) x, z~ = the softplus network
    smooth = softplus_surrogate(net)
    total = torch.zeros_like(x)
    for m in range(1, 101):
        u = (m / 100 * x).requires_grad_()
        total += torch.autograd.grad(smooth(u)[torch.arange(3), y].sum(), u)[0]
    torch.testing.assert_close(maps, x * total / 100, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(maps, IntegratedGradients(steps=100)(net, x, y))  # not the ReLU network's IG
    assert seed_ig.points_per_input == 100 and not any(isinstance(m, torch.nn.Softplus) for m in net.modules())


def test_surrogate_follows_the_model_and_passes_gradients_to_its_parameters():
    net = gap_net("small", 1, torch.float64)
    x, y = inputs(2, 1, 12, torch.float64)
    wrapped = SurrogateAttribution(GradCAM("features.1"))
    first = wrapped(net, x, y)
    torch.testing.assert_close(first, GradCAM("features.1")(softplus_surrogate(net), x, y))
    with torch.no_grad():
        net.features[1].conv.weight.mul_(1.5)  # training moves the weights: the surrogate sees them
    torch.testing.assert_close(wrapped(net, x, y), GradCAM("features.1")(softplus_surrogate(net), x, y))
    wrapped(net, x, y, create_graph=True).square().sum().backward()
    assert net.features[1].conv.weight.grad is not None and net.features[1].conv.weight.grad.abs().sum() > 0
    assert wrapped.points_per_input == 1 and "beta=1" in repr(wrapped)
    with pytest.raises(ValueError, match="no nn.ReLU"):
        linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 10))
        SurrogateAttribution(Saliency())(linear, x.float(), y)
    with pytest.raises(ValueError, match="beta must be a number > 0"):
        SurrogateAttribution(Saliency(), beta=0)


def test_points_per_input():
    assert CAM().points_per_input == GradCAM("features").points_per_input == GradCAMPlusPlus().points_per_input == 1
    assert IntegratedGradients(steps=7).points_per_input == 7 and SmoothGrad(samples=5).points_per_input == 5
    assert SurrogateAttribution(SmoothGrad(samples=3)).points_per_input == 3


@pytest.mark.parametrize("name", ["cam", "gradcam", "gradcam_pp", "integrated_gradients_seed000"])
def test_cam_attribution_configs_validate_and_build(name):
    from robustxai.utils.config import instantiate, validate_config

    cfg = OmegaConf.create({"attribution": OmegaConf.load(Path(ROOT) / "conf" / "attribution" / f"{name}.yaml")})
    validate_config(cfg)
    attribution = instantiate(cfg.attribution, "attribution")
    net = gap_net()
    x, y = inputs(2, 1, 28)
    maps = attribution(net, x, y)
    assert maps.shape == ((2, 1, 28, 28) if name.startswith("integrated") else (2, 7, 7))
    if name == "integrated_gradients_seed000":
        assert attribution.points_per_input == 100 and attribution.attribution.rule == "right"
    bad = OmegaConf.create({"attribution": {**OmegaConf.to_container(cfg.attribution), "upsample": "cubic"}})
    if name != "integrated_gradients_seed000":
        with pytest.raises(Exception, match="upsample"):
            validate_config(bad)
