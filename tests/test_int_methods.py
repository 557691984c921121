"""Seed 000's interpretability-aware training (Int family): discrepancies, inner attacks, methods, schedules, experiments."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import ClassVar

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from robustxai.attacks.attribution_norm import AttributionNormPGD
from robustxai.attacks.cam_discrepancy import CAMDiscrepancyPGD, LossIGDiscrepancyPGD, loss_ig_discrepancy
from robustxai.attacks.pgd import PGD
from robustxai.attributions.discrepancy import d_int, d_one, per_class_l1, soft_target_weights
from robustxai.attributions.path_loss import loss_path_ig
from robustxai.data import DigitsDataModule
from robustxai.methods.adversarial import budget_fraction
from robustxai.methods.ig_norm import IGNorm, IGSumNorm
from robustxai.methods.interpretability import InterpretabilityTraining
from robustxai.methods.natural import NaturalTraining
from robustxai.methods.pgd_at import PGDAdversarialTraining
from robustxai.models.boopathy import BoopathyNet
from robustxai.utils.config import instantiate, validate_config
from tests.conftest import CONF, compose_config
from tests.test_ig_norm import train_steps  # a few Adam steps on slices of a batch

ADAM = partial(torch.optim.Adam, lr=1e-3)
INT_METHODS = ["int", "int_one", "int_adv", "int2", "int2_adv", "int_ig", "int_ig_adv"]


def tiny_net(dtype: torch.dtype = torch.float32, classes: int = 4, channels: int = 1) -> BoopathyNet:
    torch.manual_seed(0)
    return BoopathyNet("small", in_channels=channels, num_classes=classes).to(dtype)


def tiny_batch(n: int = 6, side: int = 8, channels: int = 1, classes: int = 4, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(3)
    return (torch.rand(n, channels, side, side, generator=g, dtype=dtype),
            torch.randint(0, classes, (n,), generator=g))


# -- D_int / D_one on hand-built tensors ------------------------------------------------------------------------------
def hand_case():
    """Two examples, 3 classes, 1x2 maps; the values below are worked out by hand in the comments."""
    clean = torch.stack([torch.zeros(3, 1, 2), torch.ones(3, 1, 2)]).double()
    adv = torch.tensor([[[[1.0, -2.0]], [[3.0, 0.0]], [[0.0, 0.5]]],       # l1 per class: 3, 3, 0.5
                        [[[1.0, 3.0]], [[0.0, 1.0]], [[2.0, 2.0]]]]).double()  # l1 per class: 2, 1, 2
    logits = torch.tensor([[0.0, 0.0, math.log(3.0)],   # y=0: q over {1, 2} = softmax(0, ln 3) = (1/4, 3/4)
                           [math.log(2.0), 0.0, 5.0]],  # y=2: q over {0, 1} = softmax(ln 2, 0) = (2/3, 1/3)
                          dtype=torch.float64, requires_grad=True)
    return clean, adv, logits, torch.tensor([0, 2])


def test_d_int_and_d_one_equal_the_hand_computed_values():
    clean, adv, logits, y = hand_case()
    torch.testing.assert_close(per_class_l1(clean, adv), torch.tensor([[3.0, 3.0, 0.5], [2.0, 1.0, 2.0]]).double())
    torch.testing.assert_close(soft_target_weights(logits, y),
                               torch.tensor([[0.0, 0.25, 0.75], [2 / 3, 1 / 3, 0.0]]).double())
    # 3 + 3/4 + 3/8 = 4.125 and 2 + 4/3 + 1/3 = 11/3 (raw sums, no 1/2; the true class's logit 5 plays no part)
    torch.testing.assert_close(d_int(clean, adv, logits, y), torch.tensor([4.125, 11 / 3]).double())
    torch.testing.assert_close(d_one(clean, adv, y), torch.tensor([3.0, 2.0]).double())


def test_q_is_not_detached_its_gradient_matches_the_hand_derivative():
    clean, adv, logits, y = hand_case()
    d_int(clean, adv, logits, y).sum().backward()
    # dD/dz_c = q_c (l1_c - sum_k q_k l1_k) for c != y, 0 for y: example 0: mean 1.125 -> +-0.46875;
    # example 1: mean 2*2/3 + 1/3 = 5/3 -> (2/3)(1/3) = 2/9 and (1/3)(-2/3) = -2/9
    torch.testing.assert_close(logits.grad, torch.tensor([[0.0, 0.46875, -0.46875], [2 / 9, -2 / 9, 0.0]]).double())


def test_soft_target_weights_equal_the_seeds_renormalised_softmax():
    g = torch.Generator().manual_seed(0)
    z, y = 4 * torch.randn(7, 9, generator=g, dtype=torch.float64), torch.randint(0, 9, (7,), generator=g)
    p = torch.softmax(z, 1) * (1 - F.one_hot(y, 9))
    torch.testing.assert_close(soft_target_weights(z, y), p / p.sum(1, keepdim=True))


def test_discrepancies_reject_bad_shapes_with_a_named_error():
    clean, adv, logits, y = hand_case()
    with pytest.raises(ValueError, match="cam_clean and cam_adv"):
        d_int(clean, adv[:, :2], logits, y)
    with pytest.raises(ValueError, match="logits_adv"):
        d_int(clean, adv, logits[:, :2], y)
    with pytest.raises(ValueError, match="one label per example"):
        d_one(clean, adv, y[:1])


def test_d_int_gradient_matches_finite_differences_on_a_tiny_boopathy_net():
    """gradcheck in float64 of D_int through the network, w.r.t. x' and the head (q(x') included)."""
    net = tiny_net(torch.float64)
    x, y = tiny_batch(n=2, dtype=torch.float64)
    x_adv = (x + 0.05 * torch.randn_like(x)).clamp(0, 1).requires_grad_(True)
    head = net.head.weight.detach().clone().requires_grad_(True)

    def f(x_adv: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        cam_x = F.conv2d(net.features(x), head)  # net.cam with the head as an input
        cam_adv = F.conv2d(net.features(x_adv), head)
        return d_int(cam_x, cam_adv, cam_adv.mean((2, 3)), y)

    assert torch.autograd.gradcheck(f, (x_adv, head), eps=1e-6, atol=1e-5, fast_mode=True)


# -- inner attacks ----------------------------------------------------------------------------------------------------
ATTACKS = {
    "int": lambda **k: CAMDiscrepancyPGD(discrepancy="int", **k),
    "one": lambda **k: CAMDiscrepancyPGD(discrepancy="one", **k),
    "int_adv": lambda **k: CAMDiscrepancyPGD(discrepancy="int", ce_weight=1.0, **k),
    "ig2": lambda **k: LossIGDiscrepancyPGD(regulariser="ig2", ig_steps=2, **k),
    "ig_sum": lambda **k: LossIGDiscrepancyPGD(regulariser="ig", ce_weight=1.0, lam=1.0, ig_steps=2, **k),
}


@settings(max_examples=6, deadline=None)
@given(name=st.sampled_from(sorted(ATTACKS)), eps=st.floats(0.0, 0.5), step=st.floats(0.01, 0.3),
       steps=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_inner_attacks_keep_budget_box_and_model(name, eps, step, steps, seed):
    net = tiny_net()
    net.train()
    torch.manual_seed(seed)
    x, y = tiny_batch(n=4)
    x_adv = ATTACKS[name](eps=eps, step_size=step, steps=steps)(net, x, y)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert net.training and all(p.requires_grad and p.grad is None for p in net.parameters())


@pytest.mark.parametrize("discrepancy", ["int", "one"])
def test_cam_attack_increases_its_discrepancy(discrepancy):
    net = tiny_net()
    x, y = tiny_batch(n=8)
    torch.manual_seed(0)
    x_adv = CAMDiscrepancyPGD(eps=0.2, step_size=0.05, steps=8, discrepancy=discrepancy)(net, x, y)
    x_rand = (x + torch.empty_like(x).uniform_(-0.2, 0.2)).clamp(0, 1)
    d = d_int if discrepancy == "int" else (lambda a, b, z, t: d_one(a, b, t))
    with torch.no_grad():
        cam = net.cam(x)
        after = d(cam, net.cam(x_adv), net(x_adv), y)
        start = d(cam, net.cam(x_rand), net(x_rand), y)
    assert (after > start).float().mean() >= 0.75 and after.mean() > 1.5 * start.mean()


def test_cam_attack_with_lambda_zero_is_ce_pgd_exactly():
    net = tiny_net()
    x, y = tiny_batch()
    torch.manual_seed(5)
    ours = CAMDiscrepancyPGD(eps=0.2, step_size=0.05, steps=3, ce_weight=1.0, lam=0.0)(net, x, y)
    torch.manual_seed(5)
    pgd = PGD(eps=0.2, step_size=0.05, steps=3, loss="ce")(net, x, y)
    assert torch.equal(ours, pgd)


def test_ig_attack_with_the_plain_norm_equals_the_ig_norm_attack():
    """(lam / B) ||IG||_1 with 5 points has the signs of RAR's IG-NORM attack with m = 5, approx_factor = 1."""
    net = tiny_net()
    x, y = tiny_batch()
    torch.manual_seed(2)
    ours = LossIGDiscrepancyPGD(eps=0.2, step_size=0.05, steps=3, regulariser="ig", lam=1.0, ig_steps=5)(net, x, y)
    torch.manual_seed(2)
    rar = AttributionNormPGD(eps=0.2, step_size=0.05, steps=3, objective="ig_norm", ig_steps=5, approx_factor=1)
    assert torch.equal(ours, rar(net, x, y))


def test_ig2_sum_is_the_l1_norm_plus_the_channel_summed_norm():
    net = tiny_net(torch.float64, channels=3)
    x, y = tiny_batch(channels=3, dtype=torch.float64)
    x_adv = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    ig = loss_path_ig(net, x, x_adv, y, steps=5, reduction="none", return_ig=True).ig
    s, _ = loss_ig_discrepancy(net, x, x_adv, y, "ig2", steps=5)
    expected = ig.abs().sum((1, 2, 3)) + ig.sum(1).abs().sum((1, 2))
    torch.testing.assert_close(s, expected)
    assert (s < 2 * ig.abs().sum((1, 2, 3)) + 1e-12).all()
    grey = tiny_net(torch.float64)
    xg, yg = tiny_batch(dtype=torch.float64)
    s1, _ = loss_ig_discrepancy(grey, xg, (xg + 0.1).clamp(0, 1), yg, "ig2")
    s0, _ = loss_ig_discrepancy(grey, xg, (xg + 0.1).clamp(0, 1), yg, "ig")
    torch.testing.assert_close(s1, 2 * s0)  # one input channel: R_IG2 = 2 lam mean ||G||_1 (spec 1.3)


def test_attacks_refuse_bad_settings():
    with pytest.raises(ValueError, match="random_start must be true"):
        CAMDiscrepancyPGD(random_start=False)
    with pytest.raises(ValueError, match="discrepancy"):
        CAMDiscrepancyPGD(discrepancy="two")
    with pytest.raises(ValueError, match="regulariser"):
        LossIGDiscrepancyPGD(regulariser="ig3")
    with pytest.raises(ValueError, match="has no cam"):
        CAMDiscrepancyPGD(steps=1)(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4)), *tiny_batch())


# -- methods: losses --------------------------------------------------------------------------------------------------
def test_int_loss_is_clean_ce_plus_lambda_times_mean_d_int():
    net = tiny_net()
    x, y = tiny_batch()
    attack = CAMDiscrepancyPGD(eps=0.2, step_size=0.05, steps=2)
    torch.manual_seed(1)
    loss, logits = InterpretabilityTraining(net, ADAM, attack, lam=0.3).training_loss(x, y)
    torch.manual_seed(1)
    x_adv = attack(net, x, y)
    cam, cam_adv = net.cam(x), net.cam(x_adv)
    torch.testing.assert_close(loss, F.cross_entropy(net(x), y) + 0.3 * d_int(cam, cam_adv, net(x_adv), y).mean())
    torch.testing.assert_close(logits, net(x))


@pytest.mark.parametrize("discrepancy", ["one", "ig2"])
def test_adversarial_variants_use_ce_on_x_prime(discrepancy):
    net = tiny_net()
    x, y = tiny_batch()
    attack = PGD(eps=0.2, step_size=0.05, steps=2)
    torch.manual_seed(1)
    loss, logits = InterpretabilityTraining(net, ADAM, attack, lam=0.5, ce_on="adversarial",
                                            discrepancy=discrepancy).training_loss(x, y)
    torch.manual_seed(1)
    x_adv = attack(net, x, y)
    if discrepancy == "one":
        reg = d_one(net.cam(x), net.cam(x_adv), y)
    else:  # the seed's IG of the batch-mean CE: (lam / B) mean_b S_b
        ig = loss_path_ig(net, x, x_adv, y, steps=5, reduction="none", return_ig=True).ig
        reg = (ig.abs().sum((1, 2, 3)) + ig.sum(1).abs().sum((1, 2))) / len(x)
    torch.testing.assert_close(loss, F.cross_entropy(net(x_adv), y) + 0.5 * reg.mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, net(x_adv), rtol=1e-5, atol=1e-6)


def test_the_update_sees_the_clean_and_adversarial_maps_and_q():
    """With lam > 0 the parameter gradient differs from lam = 0, and from the same loss with q detached."""
    x, y = tiny_batch()

    def grads(lam: float, detach_q: bool = False) -> torch.Tensor:
        net = tiny_net()
        torch.manual_seed(1)
        method = InterpretabilityTraining(net, ADAM, CAMDiscrepancyPGD(eps=0.2, step_size=0.05, steps=2), lam=lam)
        if detach_q:
            import robustxai.attacks.cam_discrepancy as module
            original = module.d_int
            module.d_int = lambda a, b, z, t: original(a, b, z.detach(), t)
            try:
                loss, _ = method.training_loss(x, y)
            finally:
                module.d_int = original
        else:
            loss, _ = method.training_loss(x, y)
        loss.backward()
        return torch.cat([p.grad.flatten() for p in net.parameters()])

    with_q = grads(1.0)
    assert not torch.allclose(with_q, grads(0.0)) and not torch.allclose(with_q, grads(1.0, detach_q=True))


def test_method_and_attack_must_agree_on_lambda():
    with pytest.raises(ValueError, match="one lam for both"):
        InterpretabilityTraining(tiny_net(), ADAM, CAMDiscrepancyPGD(ce_weight=1.0, lam=0.02), lam=0.01)
    with pytest.raises(ValueError, match="has no cam"):
        InterpretabilityTraining(torch.nn.Linear(2, 2), ADAM, PGD(), discrepancy="int").on_fit_start()
    with pytest.raises(ValueError, match="ce_on"):
        InterpretabilityTraining(tiny_net(), ADAM, PGD(), ce_on="both")


def twin_nets():
    torch.manual_seed(0)
    a, b = tiny_net(), tiny_net()
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("name", ["int", "int_one", "int2", "int_adv", "int2_adv", "int_ig", "int_ig_adv"])
def test_lambda_zero_reduces_to_natural_or_pgd_at(name):
    """int, int_one, int2, int_ig with lam = 0 are natural training; the *_adv ones PGD-AT (same parameters)."""
    x, y = tiny_batch(n=12)
    kw = {"eps": 0.2, "step_size": 0.05, "steps": 2}
    attack = {"int": CAMDiscrepancyPGD(lam=0.0, **kw), "int_one": CAMDiscrepancyPGD(discrepancy="one", lam=0.0, **kw),
              "int_adv": CAMDiscrepancyPGD(ce_weight=1.0, lam=0.0, **kw), "int_ig": LossIGDiscrepancyPGD(lam=0.0, **kw),
              "int_ig_adv": LossIGDiscrepancyPGD(ce_weight=1.0, lam=0.0, **kw)}.get(name, PGD(**kw))
    adversarial = name.endswith("_adv")
    disc = {"int_one": "one", "int_ig": "ig2", "int_ig_adv": "ig2"}.get(name, "int")
    a, b = twin_nets()
    torch.manual_seed(1)
    ours = train_steps(InterpretabilityTraining(a, ADAM, attack, lam=0.0, ce_on="adversarial" if adversarial else "clean",
                                                discrepancy=disc), x, y)
    torch.manual_seed(1)
    reference = PGDAdversarialTraining(b, ADAM, PGD(**kw)) if adversarial else NaturalTraining(b, ADAM)
    theirs = train_steps(reference, x, y)
    assert all(torch.equal(p, q) for p, q in zip(ours, theirs))


# -- IG-NORM / IG-SUM-NORM, seed 000's variant -----------------------------------------------------------------------
def test_seed000_reduction_is_mean_ce_plus_the_explicit_one_over_b():
    """IG-Norm: CE(x) + (1/B) mean_b ||IG_b||_1; IG-Sum-Norm: CE(x') + the same (5-point loss-IG, no lam)."""
    net = tiny_net()
    x, y = tiny_batch()
    kw = {"eps": 0.2, "step_size": 0.05, "steps": 2}
    for cls, attack in ((IGNorm, AttributionNormPGD(objective="ig_norm", ig_steps=5, approx_factor=1, **kw)),
                        (IGSumNorm, LossIGDiscrepancyPGD(regulariser="ig", ce_weight=1.0, lam=1.0, **kw))):
        torch.manual_seed(1)
        loss, _ = cls(net, ADAM, attack, ig_steps=5, reduction="seed000").training_loss(x, y)
        torch.manual_seed(1)
        x_adv = attack(net, x, y)
        norm = loss_path_ig(net, x, x_adv, y, steps=5, reduction="none").norm
        ce = F.cross_entropy(net(x if cls is IGNorm else x_adv), y)
        torch.testing.assert_close(loss, ce + norm.mean() / len(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="without the 1/B"):
        IGSumNorm(net, ADAM, AttributionNormPGD(objective="ig_sum_norm"), reduction="seed000")


# -- schedules --------------------------------------------------------------------------------------------------------
def seed_eps_fraction(step: int, start: int, full: int) -> float:
    """The seed's eps_val(eps)(step) / eps, written from spec 1.2 (0 while step <= start, linear to 1 at full)."""
    if step <= start:
        return 0.0
    return (step - start) / (full - start) if step <= full else 1.0


@pytest.mark.parametrize("start,full", [(2000, 10000), (5000, 70000), (5000, 10000)])
def test_warmup_plus_one_and_ramp_give_the_seeds_eps_rule(start, full):
    steps = [0, 1, start - 1, start, start + 1, start + 2, (start + full) // 2, full - 1, full, full + 1, 3 * full]
    ours = [budget_fraction(s, start + 1, full - start) for s in steps]
    assert ours == pytest.approx([seed_eps_fraction(s, start, full) for s in steps], abs=1e-12)


class Recorder(L.Callback):
    """Records, before each optimiser step, the learning rate the update will use."""

    def __init__(self) -> None:
        self.lrs = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


class RecordingPGD(PGD):
    """PGD that records the (eps, step_size) it is called with."""

    calls: ClassVar[list] = []

    def perturb(self, model, x, y):
        RecordingPGD.calls.append((self.eps, self.step_size))
        return super().perturb(model, x, y)


def quiet_trainer(steps: int, callbacks=()) -> L.Trainer:
    return L.Trainer(max_steps=steps, max_epochs=-1, limit_val_batches=0, accelerator="cpu", logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, callbacks=list(callbacks))


@pytest.mark.parametrize("ramp_step", [True, False])
def test_lr_and_eps_follow_the_optimiser_step_inside_the_trainer(ramp_step):
    from robustxai.methods.schedules import PiecewiseConstantLR

    RecordingPGD.calls = []
    recorder = Recorder()
    scheduler = partial(PiecewiseConstantLR, boundaries=[1, 3], values=[0.1, 0.01, 0.001])
    method = InterpretabilityTraining(BoopathyNet("small", 1, 10), partial(torch.optim.Adam, lr=5.0),
                                      RecordingPGD(eps=0.4, step_size=0.04, steps=1), lam=0.01, discrepancy="int",
                                      scheduler=scheduler, scheduler_interval="step", eps_warmup_steps=2,
                                      eps_ramp_steps=2, eps_ramp_step_size=ramp_step)
    quiet_trainer(5, [recorder]).fit(method, datamodule=DigitsDataModule(batch_size=64, val_size=0))
    assert recorder.lrs == [0.1, 0.1, 0.01, 0.01, 0.001]  # TF piecewise_constant: values[0] while step <= 1
    step = [0.02, 0.04] if ramp_step else [0.04, 0.04]  # steps 0, 1 clean; 2: half the budget; 3, 4: full
    assert [v for call in RecordingPGD.calls for v in call] == pytest.approx([0.2, step[0], 0.4, 0.04, 0.4, 0.04])


def test_fixed_step_needs_an_attack_with_a_step_size():
    class NoStep(PGD):
        def __init__(self):
            super().__init__()
            del self.step_size

    with pytest.raises(ValueError, match="has no step_size"):
        PGDAdversarialTraining(tiny_net(), ADAM, NoStep(), eps_ramp_step_size=False)


# -- every method through the normal machinery -----------------------------------------------------------------------
@pytest.mark.parametrize("name", INT_METHODS)
def test_every_int_method_trains_a_few_steps_from_its_config(name, tmp_path):
    cfg = compose_config("train", [f"method={name}", "model=boopathy_small", "data=digits", "method.attack.steps=1",
                                   "method.ig_steps=2", "method.eps_ramp_steps=2", "method.eps_ramp_step_size=false"],
                         tmp_path)
    validate_config(cfg)
    torch.manual_seed(0)
    model = BoopathyNet("small", 1, 10)
    before = [p.detach().clone() for p in model.parameters()]
    method = instantiate(cfg.method, "method", model=model)
    trainer = quiet_trainer(3)
    trainer.fit(method, datamodule=DigitsDataModule(batch_size=32, val_size=0))
    assert trainer.global_step == 3 and torch.isfinite(trainer.callback_metrics["train/loss"])
    assert "train/discrepancy" in trainer.callback_metrics
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


# -- experiments ------------------------------------------------------------------------------------------------------
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("boopathy_*.yaml"))
# one experiment per (dataset, kind of method) by default (composition costs ~0.4 s each); all of them with -m slow
REPRESENTATIVE = {"boopathy_mnist_natural", "boopathy_mnist_int", "boopathy_mnist_int_ig_adv", "boopathy_mnist_ig_sum_norm",
                  "boopathy_cifar10_int_adv", "boopathy_cifar10_ig_norm", "boopathy_cifar10_int2",
                  "boopathy_restricted_imagenet_int_one", "boopathy_restricted_imagenet_pgd_at", "boopathy_mnist_trades"}
SPEC = {  # spec seed_boopathy.md 1.2
    "mnist": {"batch": 50, "eps": 0.3, "step": 0.01, "steps": 40, "warm": 2000, "full": 10000, "lr": [1e-4],
              "bounds": None, "max_steps": 110_000, "arch": "small"},
    "cifar10": {"batch": 128, "eps": 8 / 255, "step": 2 / 255, "steps": 10, "warm": 5000, "full": 70000,
                "lr": [1e-3, 1e-4, 1e-5], "bounds": [40000, 60000], "max_steps": 70_200, "arch": "small"},
    "restricted_imagenet": {"batch": 64, "eps": 0.003, "step": 0.1, "steps": 7, "warm": 5000, "full": 10000,
                            "lr": [1e-3, 1e-4, 1e-5], "bounds": [8000, 16000], "max_steps": -1, "arch": "wresnet"},
}


def test_every_dataset_has_the_int_experiments():
    for dataset in SPEC:
        for method in ["natural", "pgd_at", "int", "int_one", "int_adv", "int2", "int2_adv"]:
            assert f"boopathy_{dataset}_{method}" in EXPERIMENTS
    assert {f"boopathy_{d}_{m}" for d in ("mnist", "cifar10")
            for m in ("int_ig", "int_ig_adv", "ig_norm", "ig_sum_norm")} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", [e if e in REPRESENTATIVE else pytest.param(e, marks=pytest.mark.slow)
                                        for e in EXPERIMENTS])
def test_every_boopathy_experiment_composes_and_builds_with_the_spec_numbers(experiment, tmp_path):
    dataset = next(d for d in SPEC if experiment.startswith(f"boopathy_{d}_"))
    method_name = experiment[len(f"boopathy_{dataset}_"):]
    s = SPEC[dataset]
    cfg = compose_config("train", [f"experiment={experiment}"], tmp_path)
    validate_config(cfg)
    m = cfg.method
    big_batch = dataset == "restricted_imagenet" and method_name in ("int_one", "int2_adv")
    assert cfg.data.batch_size == (128 if big_batch else s["batch"])
    assert cfg.model.arch == s["arch"] and cfg.trainer.max_steps == s["max_steps"]
    assert cfg.trainer.max_epochs == (35 if dataset == "restricted_imagenet" else -1)
    if dataset != "restricted_imagenet":
        assert cfg.data.val_size == 5000 and not cfg.data.get("augment", False)
    assert m.optimizer._target_ == "torch.optim.Adam" and m.optimizer.weight_decay == 0
    if s["bounds"] is None:
        assert m.scheduler is None and m.optimizer.lr == s["lr"][0]
    else:
        assert list(m.scheduler.boundaries) == s["bounds"] and list(m.scheduler["values"]) == s["lr"]
        assert m.scheduler_interval == "step"
    if method_name != "natural":
        assert (m.eps_warmup_steps, m.eps_ramp_steps, m.eps_ramp_step_size) == (s["warm"] + 1, s["full"] - s["warm"],
                                                                                 False)
        a = m.attack
        start = a.start == "uniform" if method_name == "trades" else a.random_start  # TRADES: the seed's U(-eps, eps)
        assert (a.eps, a.step_size, a.steps, start) == (pytest.approx(s["eps"]), pytest.approx(s["step"]),
                                                        s["steps"], True)
    if method_name.startswith("int"):
        assert m.lam == 0.01
    expected_attack = {"int": "CAMDiscrepancyPGD", "int_one": "CAMDiscrepancyPGD", "int_adv": "CAMDiscrepancyPGD",
                       "int2": "PGD", "int2_adv": "PGD", "pgd_at": "PGD", "int_ig": "LossIGDiscrepancyPGD",
                       "int_ig_adv": "LossIGDiscrepancyPGD", "ig_norm": "LossIGDiscrepancyPGD",
                       "ig_sum_norm": "LossIGDiscrepancyPGD", "trades": "TradesKL"}.get(method_name)
    model = BoopathyNet(s["arch"] if dataset != "restricted_imagenet" else "small",
                        3 if dataset != "mnist" else 1, 9 if dataset == "restricted_imagenet" else 10)
    method = instantiate(m, "method", model=model)
    if expected_attack is None:
        assert isinstance(method, NaturalTraining)
        return
    assert type(method.attack).__name__ == expected_attack
    if isinstance(method, InterpretabilityTraining):
        ce_on = "adversarial" if method_name.endswith("_adv") else "clean"
        disc = {"int_one": "one", "int_ig": "ig2", "int_ig_adv": "ig2"}.get(method_name, "int")
        assert (method.ce_on, method.discrepancy, method.ig_steps) == (ce_on, disc, 5)
        if method_name in ("int", "int_one", "int_adv"):
            assert method.attack.discrepancy == disc and method.attack.ce_weight == (method_name == "int_adv")
        if disc == "ig2":
            assert method.attack.regulariser == "ig2" and method.attack.ig_steps == 5
            assert method.attack.ce_weight == (method_name == "int_ig_adv") and method.attack.lam == 0.01
    if method_name in ("ig_norm", "ig_sum_norm"):
        assert method.reduction == "seed000" and method.ig_steps == 5 and method.weight == 1.0
        assert method.attack.regulariser == "ig" and method.attack.ig_steps == 5 and method.attack.lam == 1.0
        assert method.attack.ce_weight == (method_name == "ig_sum_norm")
    assert cfg.attack.pgd.steps == 200 and cfg.attack.pgd.step_size == 0.01 and not cfg.attack.pgd.random_start


def test_int_method_configs_compose_on_any_dataset(tmp_path):
    for name in ("int", "int_adv", "int_ig_adv"):
        cfg = compose_config("train", [f"method={name}", "data=mnist", "model=boopathy_small"], tmp_path)
        validate_config(cfg)
        assert cfg.method.attack.eps == cfg.threat.linf.eps and cfg.method.attack.lam == cfg.method.lam
    assert Path(CONF / "method" / "int.yaml").exists()
