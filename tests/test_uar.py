"""UAR attacks (Kang et al. 2019) as seed 000 runs them: budgets, box, the JPEG codec, targets, success, errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog
from torch import nn

from robustxai.attacks.uar import (
    UPSTREAM_CALIBRATED_STEP,
    ElasticAttack,
    FogAttack,
    GaborAttack,
    JPEGAttack,
    JPEGCodec,
    SnowAttack,
)
from robustxai.attacks.uar.fog import diamond_square, fog_map_size
from robustxai.attacks.uar.gabor import gabor_kernels
from robustxai.attacks.uar.jpeg import _l1_box_vertex, _project_l1
from robustxai.attacks.uar.jpeg_codec import (
    RGB_TO_YCBCR,
    block_dct,
    block_idct,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)
from robustxai.attacks.uar.snow import (
    flake_kernels,
    flake_offsets,
    flake_stamps,
    place_flakes,
    region_means,
)
from robustxai.data.digits import digits_as_mnist
from tests.conftest import TinyConvNet

TOL = 1e-5
ALL_NAMES = ("uar_jpeg_linf", "uar_jpeg_l2", "uar_jpeg_l1", "uar_fog", "uar_gabor", "uar_snow", "uar_elastic")


def _images(seed: int, n: int, channels: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, side, side, generator=g), torch.randint(0, 10, (n,), generator=g)


# -- the JPEG codec ------------------------------------------------------------------------------
def test_block_dct_is_scipys_orthonormal_dct():
    blocks = torch.randn(3, 5, 8, 8, dtype=torch.float64)
    want = scipy.fft.dctn(blocks.numpy(), axes=(-2, -1), norm="ortho")
    np.testing.assert_allclose(block_dct(blocks).numpy(), want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(block_idct(torch.from_numpy(want)).numpy(),
                               scipy.fft.idctn(want, axes=(-2, -1), norm="ortho"), rtol=0, atol=1e-12)
    torch.testing.assert_close(block_idct(block_dct(blocks)), blocks, rtol=0, atol=1e-12)


def test_ycbcr_conversion_is_inverted_exactly_and_is_jfif():
    rgb = torch.rand(4, 3, 5, 7, dtype=torch.float64) * 255
    torch.testing.assert_close(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, rtol=0, atol=1e-9)
    # the exact inverse matches JFIF's published decoding constants
    inv = torch.linalg.inv(torch.tensor(RGB_TO_YCBCR, dtype=torch.float64))
    jfif = torch.tensor([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(inv, jfif, rtol=0, atol=2e-5)
    grey = torch.full((1, 3, 1, 1), 77.0, dtype=torch.float64)     # grey has no chroma
    torch.testing.assert_close(rgb_to_ycbcr(grey).flatten(), torch.tensor([77.0, 128.0, 128.0], dtype=torch.float64))


@settings(max_examples=12, deadline=None)
@given(channels=st.sampled_from([1, 3]), height=st.integers(2, 20), width=st.integers(2, 20), seed=st.integers(0, 999))
def test_codec_round_trips_exactly(channels, height, width, seed):
    x = torch.rand(2, channels, height, width, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    plain = JPEGCodec(chroma_subsampling=False)
    torch.testing.assert_close(plain.decode(plain.encode(x), channels, height, width), x, rtol=0, atol=1e-9)
    if channels == 1:   # grey images have constant chroma, so 4:2:0 subsampling loses nothing either
        sub = JPEGCodec(chroma_subsampling=True)
        torch.testing.assert_close(sub.decode(sub.encode(x), 1, height, width), x, rtol=0, atol=1e-9)


def test_codec_coefficients_round_trip_with_subsampling():
    codec = JPEGCodec(chroma_subsampling=True)
    x = torch.rand(2, 3, 16, 32, dtype=torch.float64)
    coefficients = [c + torch.randn_like(c) for c in codec.encode(x)]
    assert [tuple(c.shape[1:3]) for c in coefficients] == codec.coefficient_shapes(16, 32) == [(2, 4), (1, 2), (1, 2)]
    again = codec.encode(codec.decode(coefficients, 3, 16, 32))
    for a, b in zip(again, coefficients):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


@pytest.mark.parametrize("norm,eps", [("linf", 0.2), ("l2", 3.0), ("l1", 20.0)])
def test_jpeg_output_moves_each_quantised_coefficient_by_half_the_variable(norm, eps):
    """Decoding the attacked image recovers the perturbation: T(x') - T(x) = v / 2 (no clipping on mid-grey)."""
    torch.manual_seed(0)
    model = TinyConvNet(in_channels=3, side=16).eval().double()
    x = 0.45 + 0.1 * torch.rand(2, 3, 16, 16, dtype=torch.float64)
    attack = JPEGAttack(norm=norm, eps=eps, steps=3)
    result = attack.run(model, x, torch.tensor([1, 2]))
    codec = JPEGCodec()
    delta = torch.cat([(a - b).flatten(1) for a, b in zip(codec.encode(result.x_adv), codec.encode(x))], dim=1)
    torch.testing.assert_close(delta, result.coefficients / 2, rtol=0, atol=1e-7)


# -- budgets and box (hypothesis) -----------------------------------------------------------------
def _case(seed: int, channels: int, side: int, n: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    x, y = _images(seed, n, channels, side)
    return TinyConvNet(in_channels=channels, side=side).eval(), x, y


def _variables(result) -> dict[str, torch.Tensor]:
    """The optimised variables an attack reports (every extra but the targets), in order."""
    return {k: v for k, v in result.extras.items() if k != "target"}


def _in_box(x_adv: torch.Tensor, x: torch.Tensor) -> None:
    assert x_adv.shape == x.shape and torch.isfinite(x_adv).all()
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


CASE = {"channels": st.sampled_from([1, 3]), "side": st.sampled_from([8, 12, 16]), "n": st.integers(1, 3),
        "steps": st.integers(1, 3), "seed": st.integers(0, 2**16), "rule": st.sampled_from(["seed", "upstream"])}


@settings(max_examples=12, deadline=None)
@given(norm=st.sampled_from(["linf", "l2", "l1"]), eps=st.floats(0.01, 300.0), box=st.floats(0.1, 3.0), **CASE)
def test_jpeg_stays_in_its_coefficient_budget_and_the_box(norm, eps, box, channels, side, n, steps, seed, rule):
    model, x, y = _case(seed, channels, side, n)
    result = JPEGAttack(norm=norm, eps=eps, steps=steps, step_rule=rule, coefficient_box=box).run(model, x, y)
    _in_box(result.x_adv, x)
    v = result.coefficients
    size = {"linf": v.abs().amax(1), "l2": v.norm(dim=1), "l1": v.abs().sum(1)}[norm]
    assert torch.all(size <= eps * (1 + TOL) + 1e-6)
    if norm != "linf":
        assert v.abs().max() <= box * (1 + TOL)


@settings(max_examples=10, deadline=None)
@given(eps=st.floats(1.0, 4096.0), **CASE)
def test_fog_stays_in_its_weight_budget_and_the_box(eps, channels, side, n, steps, seed, rule):
    model, x, y = _case(seed, channels, side, n)
    attack = FogAttack(eps=eps, steps=steps, step_rule=rule)
    result = attack.run(model, x, y)
    _in_box(result.x_adv, x)
    weights = _variables(result)
    assert all(v.min() >= 0.0 and v.max() <= 1.0 for v in weights.values())
    # the image is (x + e F) / (max x + e) with the fog F of those weights, and F in [0, 1]
    e = eps / 255.0
    fog = attack.fog(weights, side, side)
    assert fog.min() >= 0.0 and fog.max() <= 1.0
    recovered = (result.x_adv * (x.amax(dim=(2, 3), keepdim=True) + e) - x) / e
    torch.testing.assert_close(recovered, fog.expand_as(x), rtol=0, atol=2e-4 * (1 + 1 / e))


@settings(max_examples=10, deadline=None)
@given(eps=st.floats(1.0, 800.0), support=st.sampled_from(["sparse", "complement"]), **CASE)
def test_gabor_stays_in_its_weight_budget_and_the_box(eps, support, channels, side, n, steps, seed, rule):
    model, x, y = _case(seed, channels, side, n)
    result = GaborAttack(eps=eps, steps=steps, step_rule=rule, support=support).run(model, x, y)
    _in_box(result.x_adv, x)
    w = result.weights
    assert w.shape == (n, 1, side, side) and w.abs().max() <= 1.0
    delta = result.x_adv - x            # noise in [0, 1], scaled by eps / 255: it only brightens
    assert delta.min() >= -1e-6 and delta.max() <= eps / 255.0 * (1 + TOL) + 1e-6


@settings(max_examples=10, deadline=None)
@given(eps=st.floats(0.1, 8.0), budget=st.floats(0.05, 0.5), **CASE)
def test_snow_stays_in_its_intensity_budget_and_the_box(eps, budget, channels, side, n, steps, seed, rule):
    model, x, y = _case(seed, channels, side, n)
    attack = SnowAttack(eps=eps, steps=steps, step_rule=rule, budget=budget)
    result = attack.run(model, x, y)
    _in_box(result.x_adv, x)
    u = result.intensities
    assert u.shape == (n, 7, math.ceil(side / 4), math.ceil(side / 4))
    assert u.min() > 0.0 and u.max() <= 1.0
    assert region_means(u).max() <= budget * (1 + TOL)
    luma = x if channels == 1 else (x * torch.tensor([0.2126, 0.7152, 0.0722]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    base = 0.75 * x + 0.25 * torch.maximum(x, 1.5 * luma + 0.5)     # snow is only ever added to the discoloured image
    assert torch.all(result.x_adv >= base.clamp(max=1.0) - 1e-6)


@settings(max_examples=10, deadline=None)
@given(eps=st.floats(0.05, 4.0), kernel=st.sampled_from([1, 3, 5]), **CASE)
def test_elastic_stays_in_its_flow_budget_and_the_box(eps, kernel, channels, side, n, steps, seed, rule):
    model, x, y = _case(seed, channels, side, n)
    attack = ElasticAttack(eps=eps, steps=steps, step_rule=rule, kernel_size=kernel)
    result = attack.run(model, x, y)
    _in_box(result.x_adv, x)
    flow = result.flow
    assert flow.shape == (n, 2, side, side) and flow.abs().max() <= eps * (1 + TOL)
    shift = attack.displacement(flow, attack._setup(x))
    assert shift.abs().max() <= eps * (1 + TOL)


def test_other_boxes_are_respected():
    torch.manual_seed(0)
    model = TinyConvNet(in_channels=3, side=8).eval()
    x = torch.rand(3, 3, 8, 8) * 2 - 1
    for attack in (JPEGAttack(steps=2, box=(-1.0, 1.0)), FogAttack(steps=2, box=(-1.0, 1.0)),
                   SnowAttack(steps=2, box=(-1.0, 1.0)), ElasticAttack(steps=2, box=(-1.0, 1.0))):
        x_adv = attack(model, x, torch.tensor([0, 1, 2]))
        assert x_adv.min() >= -1.0 and x_adv.max() <= 1.0


# -- the pieces, against hand-written references ---------------------------------------------------
def _naive_diamond_square(weights: list[np.ndarray], decay: float) -> np.ndarray:
    """Textbook diamond-square on a wrapping grid, one point at a time (an independent reference)."""
    levels = len(weights) // 3
    size = 2 ** levels
    grid = np.zeros((size, size))
    wibble, step = 100.0, size
    for level in range(levels):
        ws, wt, wl = weights[3 * level:3 * level + 3]
        half, n = step // 2, size // step
        for a in range(n):
            for b in range(n):
                r, c = a * step, b * step
                corners = grid[r, c] + grid[(r + step) % size, c] + grid[r, (c + step) % size] \
                    + grid[(r + step) % size, (c + step) % size]
                grid[r + half, c + half] = corners / 4 + wibble * (2 * ws[a, b] - 1)
        for a in range(n):
            for b in range(n):
                r, c = a * step, b * step
                top = (grid[r, c] + grid[r, (c + step) % size]
                       + grid[(r - half) % size, c + half] + grid[r + half, c + half])
                grid[r, c + half] = top / 4 + wibble * (2 * wt[a, b] - 1)
                left = (grid[r, c] + grid[(r + step) % size, c]
                        + grid[r + half, (c - half) % size] + grid[r + half, c + half])
                grid[r + half, c] = left / 4 + wibble * (2 * wl[a, b] - 1)
        step //= 2
        wibble /= decay
    return (grid - grid.min()) / (grid.max() - grid.min())


def test_diamond_square_matches_a_pointwise_reference_and_a_hand_computed_map():
    g = torch.Generator().manual_seed(3)
    weights = [torch.rand(2, 2 ** level, 2 ** level, dtype=torch.float64, generator=g)
               for level in range(4) for _ in range(3)]
    ours = diamond_square(weights, wibble_decay=2.0)
    for i in range(2):
        np.testing.assert_allclose(ours[i].numpy(), _naive_diamond_square([w[i].numpy() for w in weights], 2.0),
                                   rtol=0, atol=1e-12)
    # one level by hand: centre 100 (w = 1), top 100/2 + 0 (w = 1/2), left 100/2 - 100 (w = 0)
    one = diamond_square([torch.tensor([[[1.0]]]), torch.tensor([[[0.5]]]), torch.tensor([[[0.0]]])], 2.0)
    torch.testing.assert_close(one[0], torch.tensor([[1 / 3, 2 / 3], [0.0, 1.0]]))
    assert fog_map_size(28, 28) == fog_map_size(32, 32) == 64 and fog_map_size(224, 224) == 256


def test_gabor_kernels_match_a_per_image_formula():
    sigma, wavelength = torch.tensor([0.15, 0.35]), torch.tensor([3.5, 5.0])
    theta, sides = torch.tensor([0.3, 2.0]), torch.tensor([1, 4])
    ours = gabor_kernels(23, sigma, wavelength, theta, sides)
    axis = np.linspace(-0.5, 0.5, 23)
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    for b in range(2):
        want = np.zeros((23, 23))
        for i in range(int(sides[b])):
            angle = float(theta[b]) + np.pi * i / int(sides[b])
            u, v = xx * np.cos(angle) + yy * np.sin(angle), -xx * np.sin(angle) + yy * np.cos(angle)
            s = float(sigma[b]) + 1e-3
            want += np.exp(-0.5 * (u ** 2 + v ** 2) / s ** 2) * np.cos(2 * np.pi * float(wavelength[b]) * u)
        np.testing.assert_allclose(ours[b, 0].numpy(), want, rtol=0, atol=1e-5)


def test_gabor_support_sparse_is_the_draw_and_complement_is_the_seeds_mask():
    torch.manual_seed(0)
    model, x, y = TinyConvNet(in_channels=1, side=64).eval(), torch.rand(2, 1, 64, 64), torch.tensor([0, 1])
    sparse = (GaborAttack(steps=2, support="sparse").run(model, x, y).weights != 0).float().mean()
    complement = (GaborAttack(steps=2, support="complement").run(model, x, y).weights != 0).float().mean()
    assert 0.04 < sparse < 0.11 and complement > 0.85      # density 1/14 vs 13/14


def test_snow_transposed_convolution_equals_placing_flakes_and_convolving():
    torch.manual_seed(0)
    kernels = flake_kernels(torch.float64)
    assert kernels.shape == (7, 13, 13) and kernels.min() >= 0
    for height, width in ((28, 28), (10, 13)):
        u = torch.rand(2, 7, math.ceil(height / 4), math.ceil(width / 4), dtype=torch.float64)
        flakes = place_flakes(u ** 4, flake_offsets(torch.float64))
        want = F.conv2d(flakes, kernels[None], padding=6)[..., :height, :width]
        torch.testing.assert_close(SnowAttack.snow(u, {"stamps": flake_stamps(kernels)}, height, width), want,
                                   rtol=0, atol=1e-12)


def test_snow_region_means_match_a_loop():
    u = torch.rand(1, 2, 10, 13, dtype=torch.float64)
    means = region_means(u)
    assert means.shape == (1, 2, 2, 2)
    for i in range(2):
        for j in range(2):
            torch.testing.assert_close(means[0, :, i, j], u[0, :, 8 * i:8 * i + 8, 8 * j:8 * j + 8].mean(dim=(1, 2)))


def test_elastic_zero_flow_is_the_identity_and_a_unit_flow_shifts_one_pixel():
    x = torch.rand(2, 3, 9, 9)
    attack = ElasticAttack(eps=1.0)
    ctx = attack._setup(x)
    torch.testing.assert_close(attack._render(x, {"flow": torch.zeros(2, 2, 9, 9)}, ctx), x, rtol=0, atol=1e-6)
    flow = torch.zeros(2, 2, 9, 9)
    flow[:, 0] = 1.0                    # sample one pixel to the right everywhere
    shifted = attack._render(x, {"flow": flow}, ctx)
    torch.testing.assert_close(shifted[..., :-1], x[..., 1:], rtol=0, atol=1e-5)


def test_frank_wolfe_vertex_solves_the_linear_program():
    g = torch.randn(3, 12, dtype=torch.float64)
    eps, bound = 5.5, 2.0
    s = _l1_box_vertex(g, eps, bound)
    assert torch.all(s.abs().sum(1) <= eps + 1e-12) and s.abs().max() <= bound
    for i in range(3):      # max g.s s.t. |s_i| <= bound, ||s||_1 <= eps, with s = p - q, p, q >= 0
        c = -np.concatenate([g[i].numpy(), -g[i].numpy()])
        lp = linprog(c, A_ub=np.ones((1, 24)), b_ub=[eps], bounds=[(0, bound)] * 24)
        assert float(g[i] @ s[i]) == pytest.approx(-lp.fun, abs=1e-9)


def test_l1_projection_lands_on_the_sphere_and_keeps_inner_points():
    v = torch.randn(4, 20, dtype=torch.float64) * 3
    p = _project_l1(v, 2.0)
    torch.testing.assert_close(p.abs().sum(1), torch.full((4,), 2.0, dtype=torch.float64))
    assert torch.all(p * v >= 0)                 # soft thresholding keeps signs
    inner = v / v.abs().sum(1, keepdim=True)
    torch.testing.assert_close(_project_l1(inner, 2.0), inner)


# -- step rules, targets, success ---------------------------------------------------------------------
def test_step_rules():
    assert FogAttack(eps=2048.0, steps=200).step == pytest.approx(2048 / math.sqrt(200))
    for cls in (FogAttack, GaborAttack, SnowAttack):
        assert cls(step_rule="upstream").step == UPSTREAM_CALIBRATED_STEP == 0.002236
    assert JPEGAttack(eps=0.25, steps=200, step_rule="upstream").step == pytest.approx(0.25 / math.sqrt(200))
    assert ElasticAttack(eps=1.0, steps=100, step_rule="upstream").step == pytest.approx(0.1)
    assert SnowAttack(step_size=0.01, step_rule="upstream").step == 0.01


def test_targets_are_uniform_over_the_other_classes_and_success_is_hitting_them():
    torch.manual_seed(0)
    model = TinyConvNet(in_channels=1, side=8).eval()
    x, y = torch.rand(600, 1, 8, 8), torch.randint(0, 10, (600,))
    result = ElasticAttack(steps=1).run(model, x, y)
    assert torch.all(result.target != y) and set(((result.target - y) % 10).tolist()) == set(range(1, 10))
    pred = model(result.x_adv).argmax(1)
    assert torch.equal(result.success, pred == result.target)
    # target_class="given": y holds the targets (the seed's seed-99 draw, say)
    fixed = (y[:5] + 3) % 10
    given = ElasticAttack(steps=1, target_class="given").run(model, x[:5], fixed)
    assert torch.equal(given.target, fixed) and torch.equal(given.success, model(given.x_adv).argmax(1) == fixed)
    # untargeted: ascend the label's loss, success = prediction changed
    out = ElasticAttack(steps=1, targeted=False).run(model, x[:5], y[:5])
    assert torch.equal(out.target, y[:5]) and torch.equal(out.success, model(out.x_adv).argmax(1) != y[:5])


def test_call_and_run_give_the_same_images():
    torch.manual_seed(0)
    model, (x, y) = TinyConvNet(in_channels=3, side=16).eval(), _images(0, 3, 3, 16)
    for attack in _all_attacks(steps=2):
        torch.manual_seed(5)
        x_adv = attack(model, x, y)
        torch.manual_seed(5)
        torch.testing.assert_close(attack.run(model, x, y).x_adv, x_adv, rtol=0, atol=0)


def test_attacks_leave_the_model_unchanged():
    torch.manual_seed(0)
    model = TinyConvNet(in_channels=3, side=16).train()
    model.net[-1].requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    x, y = _images(0, 2, 3, 16)
    for attack in _all_attacks(steps=2):
        attack(model, x, y)
        assert model.training and all(m.training for m in model.modules())
        assert [p.requires_grad for p in model.parameters()] == flags
        assert all(p.grad is None for p in model.parameters())
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def _all_attacks(steps: int) -> list:
    return [JPEGAttack("linf", steps=steps), JPEGAttack("l2", 8.0, steps=steps), JPEGAttack("l1", 256.0, steps=steps),
            FogAttack(steps=steps), GaborAttack(steps=steps), SnowAttack(steps=steps), ElasticAttack(steps=steps)]


# -- a natural model on real digits ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small CNN trained for ~1 s on the embedded digits (about 93 % test accuracy)."""
    torch.manual_seed(0)
    x, y = digits_as_mnist()
    order = torch.randperm(len(y))
    x, y = x[order], y[order]
    model = nn.Sequential(nn.Conv2d(1, 8, 5, stride=2, padding=2), nn.ReLU(), nn.Conv2d(8, 16, 5, stride=2, padding=2),
                          nn.ReLU(), nn.Flatten(), nn.Linear(16 * 7 * 7, 10))
    optimiser = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(3):
        for i in range(0, 1400, 50):
            loss = F.cross_entropy(model(x[i:i + 50]), y[i:i + 50])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        assert (model(x[1400:]).argmax(1) == y[1400:]).float().mean() > 0.85
    return model, x[1400:1432], y[1400:1432]


@pytest.mark.parametrize("attack", [
    JPEGAttack("linf", eps=1.0, steps=20), JPEGAttack("l2", eps=32.0, steps=20), JPEGAttack("l1", eps=512.0, steps=20),
    FogAttack(steps=20, step_size=0.05), GaborAttack(eps=200.0, steps=20, step_rule="upstream"),
    SnowAttack(steps=20), ElasticAttack(steps=20)], ids=lambda a: f"{type(a).__name__}-{getattr(a, 'norm', '')}")
def test_targeted_success_far_above_chance_on_a_natural_model(attack, digits_model):
    model, x, y = digits_model
    torch.manual_seed(1)
    result = attack.run(model, x, y)
    assert result.success.float().mean() >= 0.35          # chance: 1/9 of the images already predict the target
    with torch.no_grad():
        assert (model(result.x_adv).argmax(1) != model(x).argmax(1)).float().mean() >= 0.35


# -- errors and configs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("make,message", [
    (lambda: FogAttack(eps=0.0), "eps must be > 0"),
    (lambda: SnowAttack(eps=-1.0), "eps must be > 0"),
    (lambda: JPEGAttack(steps=0), "steps must be an integer >= 1"),
    (lambda: GaborAttack(steps=2.5), "steps must be an integer"),
    (lambda: ElasticAttack(step_size=0.0), "step_size must be > 0"),
    (lambda: FogAttack(step_rule="calibrated"), "step_rule must be one of 'seed', 'upstream'"),
    (lambda: SnowAttack(target_class="worst"), "target_class must be one of"),
    (lambda: JPEGAttack(norm="l3"), "norm must be one of 'linf', 'l2', 'l1'"),
    (lambda: JPEGAttack(coefficient_box=0.0), "coefficient_box must be > 0"),
    (lambda: GaborAttack(kernel_size=4), "kernel_size must be an odd integer"),
    (lambda: GaborAttack(support="dense"), "support must be one of 'sparse', 'complement'"),
    (lambda: SnowAttack(budget=0.0), "budget must be > 0"),
    (lambda: FogAttack(wibble_decay=0.0), "wibble_decay must be > 0"),
])
def test_bad_arguments_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_inputs_are_named():
    model = TinyConvNet(in_channels=1, side=8).eval()
    with pytest.raises(ValueError, match=r"images of shape \(N, 1 or 3, H, W\)"):
        FogAttack(steps=1)(model, torch.rand(2, 2, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="one label per image"):
        FogAttack(steps=1)(model, torch.rand(2, 1, 8, 8), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="at least 3x3 pixels"):
        ElasticAttack(steps=1)(model, torch.rand(2, 1, 2, 8), torch.tensor([0, 1]))


def test_configs_give_the_seeds_settings(compose_cfg, tmp_path: Path):
    from robustxai.tasks.common import build_attack_callbacks
    from robustxai.utils.config import validate_config

    cfg = compose_cfg("eval", ["ckpt_path=x.ckpt", f"attack=[{','.join(ALL_NAMES)}]", "+threat.uar.snow=4.0"])
    validate_config(cfg)
    attacks = {cb.name: cb.attack for cb in build_attack_callbacks(cfg, tmp_path)}
    eps = {name: attack.eps for name, attack in attacks.items()}
    assert eps == {"uar_jpeg_linf": 0.25, "uar_jpeg_l2": 8.0, "uar_jpeg_l1": 256.0, "uar_fog": 2048.0,
                   "uar_gabor": 400.0, "uar_snow": 4.0, "uar_elastic": 1.0}     # snow from threat.uar
    assert all(a.steps == 200 and a.step_rule == "seed" and a.targeted for a in attacks.values())
    assert [attacks[f"uar_jpeg_{n}"].norm for n in ("linf", "l2", "l1")] == ["linf", "l2", "l1"]
    assert attacks["uar_gabor"].support == "complement"
