"""Attacks on explanations: budget, box, label kept, best-iterate selection, clean fallback, surrogate, targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from robustxai.attacks.explanation import (
    ExplanationAttack,
    MassCenterAttack,
    RandomDirectionAttack,
    TargetMapAttack,
    TopKAttack,
    load_target_map,
    target_pattern,
)
from robustxai.attacks.surrogate import LeakySoftplus, softplus_surrogate
from robustxai.attributions.gradient import Saliency
from robustxai.attributions.integrated_gradients import IntegratedGradients
from robustxai.attributions.postprocess import rar_saliency
from robustxai.metrics import functional as MF
from robustxai.models.rar_resnet import RARResNet
from tests.conftest import TinyConvNet

SIDE = 12
ATTACKS = {"topk": TopKAttack, "mass_center": MassCenterAttack, "random": RandomDirectionAttack,
           "target": lambda *a, **k: TargetMapAttack(*a, target_map="center", **k)}


class ReluNet(nn.Module):
    """Piecewise linear: conv-ReLU-pool-linear-LeakyReLU-linear (its saliency maps are piecewise constant)."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                 nn.Linear(6 * (SIDE // 2) ** 2, 24), nn.LeakyReLU(0.1), nn.Linear(24, classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class FlipWhenMoved(nn.Module):
    """Wraps a model; adds a large logit to another class once an image has moved so that ``rule`` holds.

    The bonus is computed without gradients, so maps are those of the wrapped model; only the label
    check sees the flip. ``rule(delta) -> (N,) bool`` decides which moved images flip.
    """

    def __init__(self, base: nn.Module, clean: Tensor, rule) -> None:
        super().__init__()
        self.base, self.rule = base, rule
        self.register_buffer("clean", clean.clone())

    def forward(self, x: Tensor) -> Tensor:
        logits = self.base(x)
        if x.shape[0] != self.clean.shape[0]:  # IG path points (a multiple of the batch): no flips needed there
            return logits
        with torch.no_grad():
            delta = x - self.clean
            flip = (delta.flatten(1).abs().amax(dim=1) > 0) & self.rule(delta)
            other = (self.base(self.clean).argmax(dim=1) + 1) % logits.shape[1]
            bonus = 1e4 * nn.functional.one_hot(other, logits.shape[1]).to(logits.dtype) * flip[:, None]
        return logits + bonus


def images(seed: int, n: int = 6, dtype: torch.dtype = torch.float32) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, SIDE, SIDE, generator=g, dtype=dtype)
    x[:, :, :2] = 0.0  # black rows (as MNIST borders: zero IG there) and saturated pixels: the box matters
    x[:, :, -2:] = 1.0
    return x


def model_for(seed: int, kind: str = "tiny", dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    model = TinyConvNet(side=SIDE) if kind == "tiny" else ReluNet()
    return model.to(dtype).eval()


def make(name: str, attribution=None, **kwargs) -> ExplanationAttack:
    args = dict(eps=0.1, step_size=0.03, steps=4, k_top=20, eval_k=20)
    args.update(kwargs)
    return ATTACKS[name](attribution or IntegratedGradients(steps=4), **args)


# -- budget, box, label ---------------------------------------------------------------------------------
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), name=st.sampled_from(sorted(ATTACKS)), kind=st.sampled_from(["tiny", "relu"]),
       eps=st.sampled_from([0.0, 0.05, 0.3]), saliency=st.booleans())
def test_budget_box_and_label_always_hold(seed, name, kind, eps, saliency):
    model, x = model_for(seed, kind), images(seed)
    y = model(x).argmax(dim=1)
    attack = make(name, Saliency() if saliency else None, eps=eps, step_size=0.1)
    result = attack.run(model, x, y)
    assert (result.x_adv - x).abs().max() <= eps + 1e-6
    assert result.x_adv.min() >= 0.0 and result.x_adv.max() <= 1.0
    assert torch.equal(model(result.x_adv).argmax(dim=1), y)
    # the reported map is the map of the returned image, and an unchanged image is the clean one
    assert torch.allclose(result.adv_map, attack.maps(model, result.x_adv, y), atol=1e-5)
    assert torch.equal(result.x_adv[result.unchanged], x[result.unchanged])
    assert torch.equal(attack(model, x, y), result.x_adv) or name == "random"


def test_the_label_is_kept_even_when_most_steps_flip_it():
    model = model_for(0)
    x = images(0)
    flips = FlipWhenMoved(model, x, rule=lambda d: d.flatten(1).sum(dim=1) > 0)
    y = flips(x).argmax(dim=1)
    attack = make("topk", eps=0.2, step_size=0.05, steps=6)
    x_adv = attack(flips, x, y)
    assert torch.equal(flips(x_adv).argmax(dim=1), y)
    assert (x_adv - x).abs().max() <= 0.2 + 1e-6


# -- the clean image where nothing helps (the seed's credited 1.0) ------------------------------------------
def test_clean_image_returned_and_counted_when_every_step_flips_the_label():
    model, x = model_for(1), images(1)
    always = FlipWhenMoved(model, x, rule=lambda d: torch.ones(len(d), dtype=torch.bool))
    some = FlipWhenMoved(model, x, rule=lambda d: torch.arange(len(d)) % 2 == 0)  # even images always flip
    y = model(x).argmax(dim=1)
    attack = make("topk")
    result = attack.run(always, x, y)
    assert result.unchanged.all() and torch.equal(result.x_adv, x)
    assert torch.equal(result.adv_map, result.clean_map)
    assert torch.all(MF.kendall_tau(result.clean_map, result.adv_map) == 1.0)
    mixed = attack.run(some, x, y)
    assert torch.equal(mixed.unchanged, torch.arange(len(x)) % 2 == 0)
    assert torch.equal(mixed.x_adv[0::2], x[0::2]) and not torch.equal(mixed.x_adv[1::2], x[1::2])


def test_a_relu_network_gives_saliency_attacks_no_direction_without_the_surrogate():
    # a piecewise-linear net's gradient map has zero input-derivative (up to the normalisation, which
    # is scale-only): no direction, no step, so the clean image comes back and is counted
    model, x = model_for(2, "relu"), images(2)
    y = model(x).argmax(dim=1)
    plain = make("topk", Saliency(), surrogate="none").run(model, x, y)
    assert plain.unchanged.all() and torch.equal(plain.x_adv, x)
    smooth = make("topk", Saliency(), surrogate="softplus").run(model, x, y)
    assert not smooth.unchanged.all()


# -- best iterate: the minimum criterion over label-preserving iterates ------------------------------------
class Recording(TopKAttack):
    def _project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        projected = super()._project(x_adv, x)
        self.iterates.append(projected.detach().clone())
        return projected


@pytest.mark.parametrize("measure", ["kendall", "spearman", "intersection", "mass_center"])
def test_best_iterate_is_the_minimum_criterion_among_label_preserving_iterates(measure):
    model = model_for(3, dtype=torch.float64)
    x = images(3, n=8, dtype=torch.float64)
    flips = FlipWhenMoved(model, x, rule=lambda d: torch.round(d[:, 0, 6, 6] / 0.03) % 2 == 1)  # odd steps flip
    y = model(x).argmax(dim=1)
    attack = Recording(IntegratedGradients(steps=4), eps=0.15, step_size=0.03, steps=6, k_top=20, eval_k=20,
                       measure=measure)
    attack.iterates = []
    result = attack.run(flips, x, y)
    stack = torch.stack(attack.iterates)  # (steps, N, ...)
    clean_map = attack.maps(model, x, y)
    kept = torch.stack([flips(it).argmax(dim=1) == y for it in stack])
    scores = torch.stack([attack.score(clean_map, attack.maps(model, it, y)) for it in stack])
    assert kept.any() and not kept.all()  # the instrument really produced both kinds of iterate
    own = attack.score(clean_map, clean_map)
    masked = torch.where(kept, scores, torch.full_like(scores, float("inf")))
    best = masked.min(dim=0).values
    improved = best < own
    for i in range(len(x)):
        if improved[i]:
            first = int(torch.nonzero(masked[:, i] == best[i])[0])  # ties: the earliest iterate is kept
            assert torch.equal(result.x_adv[i], stack[first, i]) and not result.unchanged[i]
            assert result.criterion[i] == best[i]
        else:
            assert torch.equal(result.x_adv[i], x[i]) and result.unchanged[i]


# -- per-image independence ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["topk", "mass_center", "target"])
def test_batch_results_equal_per_image_results_and_chunking(name):
    model, x = model_for(4, dtype=torch.float64), images(4, n=5, dtype=torch.float64)
    y = model(x).argmax(dim=1)
    batched = make(name).run(model, x, y)
    chunked = make(name, chunk_size=2).run(model, x, y)
    single = [make(name).run(model, x[i:i + 1], y[i:i + 1]) for i in range(len(x))]
    assert torch.allclose(batched.x_adv, chunked.x_adv, atol=1e-12)
    assert torch.allclose(batched.x_adv, torch.cat([s.x_adv for s in single]), atol=1e-12)
    assert torch.equal(batched.unchanged, torch.cat([s.unchanged for s in single]))


# -- the attack works ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, Tensor, Tensor]:
    """TinyConvNet fitted to a 4-class task (which quadrant holds a bright blob) in a few hundred Adam steps."""
    g = torch.Generator().manual_seed(0)
    n = 256
    y = torch.randint(0, 4, (n,), generator=g)
    x = 0.15 * torch.rand(n, 1, SIDE, SIDE, generator=g)
    h = SIDE // 2
    for q in range(4):
        r, c = (q // 2) * h, (q % 2) * h
        blob = torch.rand(n, 1, h - 2, h - 2, generator=g) * 0.6 + 0.4
        x[:, :, r + 1:r + h - 1, c + 1:c + h - 1] += blob * (y == q).view(-1, 1, 1, 1)
    x = x.clamp(0, 1)
    torch.manual_seed(0)
    model = TinyConvNet(num_classes=4, side=SIDE)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        idx = torch.randint(0, n, (64,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    test_x, test_y = x[:24], y[:24]
    correct = model(test_x).argmax(dim=1) == test_y
    assert correct.float().mean() > 0.9
    return model, test_x[correct], test_y[correct]


@pytest.mark.parametrize("attribution", [IntegratedGradients(steps=8), Saliency()], ids=["ig", "saliency"])
def test_topk_attack_moves_the_map_more_than_random_steps(trained, attribution):
    model, x, y = trained
    settings_ = dict(eps=0.1, step_size=0.02, steps=8, k_top=20, eval_k=20)
    topk = TopKAttack(attribution, **settings_).run(model, x, y)
    torch.manual_seed(0)
    random = RandomDirectionAttack(attribution, **settings_).run(model, x, y)
    in_topk = MF.topk_intersection(topk.clean_map, topk.adv_map, 20).mean()
    in_random = MF.topk_intersection(random.clean_map, random.adv_map, 20).mean()
    assert in_topk < 0.85 and in_topk < in_random - 0.05  # measured: IG 0.80 vs 0.89, saliency 0.66 vs 0.82
    assert torch.equal(model(topk.x_adv).argmax(dim=1), y)


def test_direction_is_the_exact_gradient_through_the_ig_path():
    # the seed's per-counterfactual chain rule, sum_i (i/m) grad_i plus the (x - b) factor and the
    # normalisation, is the total derivative: autograd through the attribution must match finite differences
    torch.manual_seed(5)
    model = softplus_surrogate(nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                             nn.Linear(3 * 36, 3))).double().eval()
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 2])
    ig = IntegratedGradients(steps=5)
    top = torch.rand(2, 6, 6, dtype=torch.float64) > 0.5
    objective = lambda z: -(rar_saliency(ig(model, z, y, create_graph=True)) * top).sum()
    assert torch.autograd.gradcheck(objective, (x,), eps=1e-6, atol=1e-5)


# -- surrogate ----------------------------------------------------------------------------------------
def test_surrogate_replaces_every_activation_and_leaves_the_original_alone():
    model = ReluNet()
    surrogate = softplus_surrogate(model, beta=2.0)
    kinds = [type(m) for m in surrogate.modules()]
    assert nn.ReLU not in kinds and nn.LeakyReLU not in kinds
    assert kinds.count(nn.Softplus) == 1 and kinds.count(LeakySoftplus) == 1
    assert any(isinstance(m, nn.ReLU) for m in model.modules())  # a copy: the original keeps its ReLU
    assert surrogate.net[5].negative_slope == 0.1 and surrogate.net[1].beta == 2.0
    resnet = softplus_surrogate(RARResNet(input_size=32, num_classes=5))
    assert not any(isinstance(m, nn.LeakyReLU) for m in resnet.modules())
    assert sum(isinstance(m, LeakySoftplus) for m in resnet.modules()) > 5


@pytest.mark.parametrize("kind", ["relu", "resnet"])
def test_surrogate_equals_the_network_for_large_beta(kind):
    torch.manual_seed(0)
    if kind == "relu":
        model, x = ReluNet().eval(), torch.rand(4, 1, SIDE, SIDE)
    else:
        model, x = RARResNet(input_size=32, num_classes=5).eval(), torch.rand(2, 3, 32, 32)
    reference = model(x)
    close = softplus_surrogate(model, beta=1e4)(x)
    far = softplus_surrogate(model, beta=1.0)(x)
    scale = reference.abs().max()
    assert (close - reference).abs().max() < 1e-3 * scale
    assert (far - reference).abs().max() > 1e-2 * scale  # beta matters: the check above is not vacuous
    y = torch.arange(len(x)) % 5
    smooth_grad, grad = Saliency()(softplus_surrogate(model, beta=1e4), x, y), Saliency()(model, x, y)
    assert (smooth_grad - grad).norm() < 0.05 * grad.norm()


def test_leaky_softplus_formula():
    z = torch.linspace(-5, 5, 101)
    assert torch.allclose(LeakySoftplus(0.1, beta=1.0)(z), 0.1 * z + 0.9 * torch.log1p(torch.exp(z)))
    assert torch.allclose(LeakySoftplus(0.1, beta=1e3)(z), nn.LeakyReLU(0.1)(z), atol=1e-3)


def test_surrogate_of_a_model_without_activation_modules_is_refused():
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: Tensor) -> Tensor:
            return nn.functional.relu(self.fc(x))

    with pytest.raises(ValueError, match="no nn.ReLU or nn.LeakyReLU modules"):
        softplus_surrogate(Functional())


# -- options and errors -------------------------------------------------------------------------------
def test_random_restarts_keep_the_lowest_kendall_repeat():
    model, x = model_for(6), images(6, n=8)
    y = model(x).argmax(dim=1)
    torch.manual_seed(0)
    once = make("random", steps=3).run(model, x, y)
    torch.manual_seed(0)  # the first repeat below draws the same noise as the single run
    thrice = make("random", steps=3, restarts=3).run(model, x, y)
    tau_once = MF.kendall_tau(once.clean_map, once.adv_map)
    tau_thrice = MF.kendall_tau(thrice.clean_map, thrice.adv_map)
    assert torch.all(tau_thrice <= tau_once) and torch.any(tau_thrice < tau_once)


def test_pixel_levels_truncate_to_the_grid_and_keep_the_budget():
    model = model_for(7)
    x = torch.round(images(7) * 255) / 255
    y = model(x).argmax(dim=1)
    x_adv = make("topk", eps=8 / 255, step_size=1.5 / 255, pixel_levels=255)(model, x, y)
    levels = x_adv * 255
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6


@pytest.mark.parametrize("kwargs, message", [
    (dict(restarts=3), "restarts > 1 only makes sense for the random attack"),
    (dict(measure="pearson"), "measure must be one of"),
    (dict(surrogate="relu"), "surrogate must be one of"),
    (dict(eps=-0.1), "eps must be >= 0"),
    (dict(step_size=0.0), "step_size must be > 0"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make("topk", **kwargs)


def test_k_larger_than_the_map_is_refused():
    model, x = model_for(0), images(0, n=2)
    with pytest.raises(ValueError, match="k_top=500 is larger than the 144 pixels"):
        make("topk", k_top=500).run(model, x, model(x).argmax(dim=1))


# -- target maps ----------------------------------------------------------------------------------------
def test_target_map_is_required_and_checked(tmp_path):
    with pytest.raises(ValueError, match="target_map is required"):
        TargetMapAttack(Saliency())
    with pytest.raises(ValueError, match="does not exist"):
        TargetMapAttack(Saliency(), target_map=str(tmp_path / "missing.npy"))
    with pytest.raises(ValueError, match="must be one of"):
        target_pattern("diagonal", 4, 4)
    np.save(tmp_path / "small.npy", np.ones((5, 5), dtype=np.float32))
    attack = TargetMapAttack(Saliency(), target_map=str(tmp_path / "small.npy"), steps=1, k_top=5, eval_k=5)
    model, x = model_for(0), images(0, n=2)
    with pytest.raises(ValueError, match=r"is \(5, 5\) but the images are 12x12"):
        attack(model, x, model(x).argmax(dim=1))


def test_target_map_files_load_like_the_patterns(tmp_path):
    from PIL import Image

    region = target_pattern("bottom_right", SIDE, SIDE)
    np.save(tmp_path / "map.npy", region.numpy())
    torch.save(region, tmp_path / "map.pt")
    Image.fromarray((region.numpy() * 255).astype(np.uint8)).save(tmp_path / "map.png")
    for name in ("map.npy", "map.pt", "map.png"):
        assert torch.equal(load_target_map(str(tmp_path / name)), region)
    assert region.sum() == (SIDE // 2) ** 2 and target_pattern("border", 8, 8).sum() == 64 - 16


def test_target_attack_pulls_saliency_into_the_region(trained):
    model, x, y = trained
    attack = TargetMapAttack(IntegratedGradients(steps=8), target_map="top_left", eps=0.1, step_size=0.02, steps=8,
                             k_top=20, eval_k=20)
    result = attack.run(model, x, y)
    region = target_pattern("top_left", SIDE, SIDE)
    before = (result.clean_map * region).sum(dim=(1, 2))
    after = (result.adv_map * region).sum(dim=(1, 2))
    assert (after - before)[~result.unchanged].mean() > 0


# -- an independent re-implementation of the seed's loop, one image at a time --------------------------------
def seed_style_topk(model: nn.Module, surrogate: nn.Module, x0: Tensor, label: int, m: int, eps: float,
                    step: float, steps: int, k: int) -> tuple[Tensor, bool]:
    """The seed's ig_attack.py top-k loop for one image, written out: m separate counterfactual leaves,
    the direction Σ_i (i/m) ∂objective/∂z_i, scipy's kendalltau for the selection (criterion 1 for a
    flipped label), the best iterate below 1; returns (image, unchanged) with our fix (clean image)."""
    from scipy.stats import kendalltau

    def ig_from_counterfactuals(net: nn.Module, z: list[Tensor], create_graph: bool) -> Tensor:
        grads = [torch.autograd.grad(net(zi)[0, label], zi, create_graph=create_graph)[0] for zi in z]
        return z[-1] * torch.stack(grads).mean(dim=0)  # (x - b) with x = the last counterfactual, b = 0

    def relu_map(x: Tensor) -> np.ndarray:
        z = [((i / m) * x).requires_grad_(True) for i in range(1, m + 1)]
        return rar_saliency(ig_from_counterfactuals(model, z, False)).detach().flatten().numpy()

    s0 = relu_map(x0)
    top = np.argsort(-s0, kind="stable")[:k]
    x, best, best_x = x0.clone(), 1.0, x0.clone()
    for _ in range(steps):
        z = [((i / m) * x).detach().requires_grad_(True) for i in range(1, m + 1)]
        saliency = rar_saliency(ig_from_counterfactuals(surrogate, z, True)).flatten()
        grads = torch.autograd.grad(-saliency[torch.from_numpy(top)].sum(), z)
        direction = sum((i / m) * g for i, g in enumerate(grads, start=1))
        x = torch.clamp(x0 + torch.clamp(x + step * direction.sign() - x0, -eps, eps), 0.0, 1.0)
        criterion = 1.0 if int(model(x).argmax()) != label else kendalltau(s0, relu_map(x)).statistic
        if criterion < best:
            best, best_x = criterion, x.clone()
    return best_x, best == 1.0


def test_topk_attack_equals_a_seed_style_per_image_loop():
    model = model_for(8, dtype=torch.float64)
    x = images(8, n=4, dtype=torch.float64)
    y = model(x).argmax(dim=1)
    settings_ = dict(eps=0.1, step_size=0.02, steps=4)
    ours = TopKAttack(IntegratedGradients(steps=5), k_top=20, eval_k=20, **settings_).run(model, x, y)
    assert not ours.unchanged.all()  # the comparison covers real steps
    surrogate = softplus_surrogate(model)
    for i in range(len(x)):
        expected, unchanged = seed_style_topk(model, surrogate, x[i:i + 1], int(y[i]), m=5, eps=0.1, step=0.02,
                                              steps=4, k=20)
        assert torch.allclose(ours.x_adv[i:i + 1], expected, atol=1e-12)
        assert bool(ours.unchanged[i]) == unchanged


def test_images_per_pass_follow_the_memory_bound_unless_given():
    mnist, flower = torch.zeros(2, 1, 28, 28), torch.zeros(2, 3, 128, 128)
    attack = TopKAttack(IntegratedGradients(steps=100))
    assert attack.images_per_pass(mnist) == 2_500_000 // (100 * 784) == 31
    assert attack.images_per_pass(flower) == 1  # never below one image
    assert TopKAttack(Saliency()).images_per_pass(flower) == 2_500_000 // (3 * 128 * 128)
    assert TopKAttack(IntegratedGradients(steps=100), chunk_size=5).images_per_pass(flower) == 5
