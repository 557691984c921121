"""WoodsAttack (Algorithm 1): schedule, best iterate, momentum, no clipping, sanity check, modes."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn

from robustxai.attacks.woods import SanityCheckError, WoodsAttack, rms, step_lengths


class Linear2(nn.Module):
    """Two-class linear model: the CE input gradient always points along w_other - w_y (constant direction)."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * 8 * 8, 2)
        with torch.no_grad():
            self.fc.weight.mul_(scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.flatten(1))


class Recorder(nn.Module):
    """Wraps a model and keeps every input it was called with."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.inputs = model, []

    def forward(self, x: Tensor) -> Tensor:
        self.inputs.append(x.detach().clone())
        return self.model(x)


def _data(n: int = 6, seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=g, dtype=torch.float64).float(), torch.randint(0, 2, (n,), generator=g)


@pytest.mark.parametrize("total,steps", [(20.0, 450), (0.5, 35), (0.01, 7), (1.0, 1)])
def test_step_lengths_decay_linearly_and_sum_to_the_budget(total: float, steps: int) -> None:
    lengths = step_lengths(total, steps)
    assert torch.isclose(lengths.sum(), torch.tensor(total, dtype=torch.float64), rtol=1e-12)
    assert torch.allclose(lengths, lengths[0] * torch.arange(steps, 0, -1, dtype=torch.float64) / steps)
    assert WoodsAttack(eps=total / 5, eps_overshoot=5, steps=steps).step_lengths().sum().item() == \
        pytest.approx(total, rel=1e-12)


def test_path_along_a_constant_direction_has_rms_equal_to_the_total_budget() -> None:
    """Plain mode with eps never reached: every step goes the same way, so RMS(delta) = sum of steps."""
    x, y = _data()
    attack = WoodsAttack(eps=10.0, steps=9, eps_overshoot=0.03, sanity_check="off")
    delta = attack(Linear2(), x, y) - x
    assert torch.allclose(rms(delta), torch.full((6,), 0.3), rtol=1e-5)


def test_plain_mode_turns_back_at_eps_and_never_goes_far_beyond() -> None:
    x, y = _data()
    attack = WoodsAttack(eps=0.05, steps=30, eps_overshoot=5, sanity_check="error")
    r = rms(attack(Linear2(), x, y) - x)
    largest_step = attack.step_lengths()[0].item()
    assert bool((r < 0.05 + largest_step).all()) and bool((r > 0.05 - largest_step).all())


def test_best_iterate_is_the_smallest_successful_evaluated_iterate() -> None:
    x, y = _data(8)
    model = Recorder(Linear2(scale=5.0)).eval()
    attack = WoodsAttack(eps=3.0, steps=40, mode="l2min", momentum=0.5, sanity_check="off")
    result = attack.run(model, x, y)
    assert len(model.inputs) == 41  # 40 steps + the extra evaluation-only pass
    iterates = torch.stack(model.inputs)  # (41, n, ...)
    with torch.no_grad():
        fooled = torch.stack([model.model(it).argmax(1) != y for it in iterates])  # (41, n)
    sizes = (iterates - x).pow(2).flatten(2).mean(2)
    best = torch.where(fooled, sizes, torch.full_like(sizes, float("inf"))).min(0).values
    assert bool(result.success.all())
    assert torch.allclose((result.x_adv - x).pow(2).flatten(1).mean(1), best, rtol=1e-6, atol=1e-12)
    first = fooled.float().argmax(0)
    assert torch.equal(result.first_success, first)


def test_best_tracking_returns_the_clean_image_when_never_successful_and_final_iterate_when_off() -> None:
    x, _ = _data()
    model = Linear2(scale=1e-3)  # far too weak a budget to flip anything
    with torch.no_grad():
        y = model(x).argmax(1)  # correctly classified to start with
    tracked = WoodsAttack(eps=1e-4, steps=5, mode="l2min", sanity_check="off").run(model, x, y)
    assert torch.equal(tracked.x_adv, x) and not bool(tracked.success.any())
    assert bool((tracked.first_success == 6).all())
    final = WoodsAttack(eps=1e-4, steps=5, mode="l2min", track_best=False, sanity_check="off")(model, x, y)
    assert torch.allclose(rms(final - x), torch.full((6,), 1e-4), rtol=2e-3)  # float32 (x + d) - x


def test_already_failing_images_get_radius_zero() -> None:
    x, _ = _data()
    model = Linear2()
    with torch.no_grad():
        wrong = 1 - model(x).argmax(1)
    result = WoodsAttack(eps=1.0, steps=10, mode="l2min", sanity_check="off").run(model, x, wrong)
    assert torch.equal(result.x_adv, x) and bool((result.first_success == 0).all())


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
def test_momentum_is_an_unnormalised_ema_of_unit_directions(momentum: float) -> None:
    """On a constant direction the k-th step moves (1 - m^k) of its nominal length."""
    x, y = _data()
    steps, total = 4, 0.4
    attack = WoodsAttack(eps=100.0, steps=steps, eps_overshoot=total / 100.0, momentum=momentum,
                         sanity_check="off")
    lengths = attack.step_lengths()
    expected = sum(float(lengths[k]) * (1 - momentum ** (k + 1)) for k in range(steps))
    assert torch.allclose(rms(attack(Linear2(), x, y) - x), torch.full((6,), expected), rtol=1e-5)


def test_nothing_is_clipped_to_the_pixel_box() -> None:
    x = torch.ones(4, 3, 8, 8)
    y = torch.tensor([0, 1, 0, 1])
    x_adv = WoodsAttack(eps=5.0, steps=10, sanity_check="off")(Linear2(), x, y)
    assert float(x_adv.max()) > 1.0 and float(x_adv.min()) < 0.0


def test_sanity_check_error_warn_off() -> None:
    x, y = _data()
    late = {"eps": 1.0, "steps": 10, "eps_overshoot": 1.0}  # plain: RMS eps only reached at the very end
    with pytest.raises(SanityCheckError, match="Increase eps"):
        WoodsAttack(**late, sanity_check="error")(Linear2(), x, y)
    with pytest.warns(RuntimeWarning, match="sanity check"):
        WoodsAttack(**late, sanity_check="warn")(Linear2(), x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        WoodsAttack(**late, sanity_check="off")(Linear2(), x, y)
        WoodsAttack(eps=0.01, steps=10, eps_overshoot=5.0, sanity_check="error")(Linear2(), x, y)  # early: fine


def test_btr_mode_stops_at_chance_probability() -> None:
    x, y = _data(8)
    model = Linear2(scale=5.0)
    result = WoodsAttack(eps=3.0, steps=60, mode="btr", sanity_check="off").run(model, x, y)
    with torch.no_grad():
        p = model(result.x_adv).softmax(1).gather(1, y[:, None])[:, 0]
    assert bool(result.success.all()) and bool((p <= 0.5).all())
    attack_radius = rms(WoodsAttack(eps=3.0, steps=60, mode="l2min", sanity_check="off")(model, x, y) - x)
    assert torch.allclose(rms(result.x_adv - x), attack_radius, rtol=0.05)  # 2 classes: same boundary


def test_encourage_labels_descends_the_target_loss() -> None:
    x, y = _data()
    model = Linear2()
    loss = lambda z: nn.functional.cross_entropy(model(z), y, reduction="none")
    expl = WoodsAttack(eps=0.1, steps=10, eps_overshoot=5, encourage_labels=True, sanity_check="off")(model, x, y)
    adv = WoodsAttack(eps=0.1, steps=10, eps_overshoot=5, sanity_check="off")(model, x, y)
    with torch.no_grad():
        assert bool((loss(expl) < loss(x)).all()) and bool((loss(adv) > loss(x)).all())


def test_half_and_half_leaves_about_half_clean() -> None:
    torch.manual_seed(3)
    x = torch.rand(200, 3, 8, 8)
    y = torch.randint(0, 2, (200,))
    x_adv = WoodsAttack(eps=0.01, steps=3, half_and_half=True, sanity_check="off")(Linear2(), x, y)
    clean = (x_adv == x).flatten(1).all(1)
    assert 70 < int(clean.sum()) < 130
    assert bool(((x_adv - x)[~clean].abs().flatten(1).amax(1) > 0).all())


def test_train_mode_updates_batchnorm_like_the_seed_and_restores_the_flags() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 36, 2)).eval()
    x, y = _data()
    WoodsAttack(eps=0.01, steps=7, model_mode="eval", sanity_check="off")(model, x, y)
    assert int(model[1].num_batches_tracked) == 0
    WoodsAttack(eps=0.01, steps=7, model_mode="train", sanity_check="off")(model, x, y)
    assert int(model[1].num_batches_tracked) == 7 and not model.training
    assert all(p.requires_grad for p in model.parameters())


def test_bad_arguments_name_the_argument() -> None:
    for kwargs, name in [({"eps": -1.0}, "eps"), ({"steps": -1}, "steps"), ({"momentum": 1.0}, "momentum"),
                         ({"mode": "linf"}, "mode"), ({"sanity_check": "maybe"}, "sanity_check"),
                         ({"mode": "l2min", "encourage_labels": True}, "encourage_labels")]:
        with pytest.raises(ValueError, match=name):
            WoodsAttack(**kwargs)
    x, y = _data()
    assert torch.equal(WoodsAttack(steps=0)(Linear2(), x, y), x)
    assert WoodsAttack(eps=0.1).rescaled(0.5).eps == pytest.approx(0.05)
