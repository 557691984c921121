"""PGD / FGSM / TRADES-KL: oracle agreement with torchattacks, budget and box, model left unchanged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from robustxai.attacks import FGSM, PGD, TradesKL
from robustxai.attacks.losses import cw_margin
from tests.conftest import TinyConvNet

torchattacks = pytest.importorskip("torchattacks")


def test_pgd_linf_equals_torchattacks(tiny_model, batch):
    x, y = batch
    ours = PGD(norm="linf", eps=0.1, step_size=0.01, steps=20, random_start=False)(tiny_model, x, y)
    theirs = torchattacks.PGD(tiny_model, eps=0.1, alpha=0.01, steps=20, random_start=False)(x, y)
    assert (ours - x).abs().max() > 0.05  # the attack really moved
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_pgd_l2_equals_torchattacks(tiny_model, batch):
    x, y = batch
    ours = PGD(norm="l2", eps=0.5, step_size=0.05, steps=20, random_start=False)(tiny_model, x, y)
    theirs = torchattacks.PGDL2(tiny_model, eps=0.5, alpha=0.05, steps=20, random_start=False)(x, y)
    assert (ours - x).flatten(1).norm(dim=1).max() > 0.3
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_fgsm_equals_torchattacks(tiny_model, batch):
    x, y = batch
    torch.testing.assert_close(FGSM(eps=0.05)(tiny_model, x, y),
                               torchattacks.FGSM(tiny_model, eps=0.05)(x, y), rtol=0, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(norm=st.sampled_from(["linf", "l2"]), eps=st.floats(0.0, 2.0), steps=st.integers(1, 5),
       batch_size=st.integers(1, 6), channels=st.sampled_from([1, 3]), side=st.sampled_from([4, 8]),
       random_start=st.booleans(), loss=st.sampled_from(["ce", "cw"]), seed=st.integers(0, 2**16))
def test_adversarial_examples_stay_in_budget_and_box(norm, eps, steps, batch_size, channels, side,
                                                     random_start, loss, seed):
    torch.manual_seed(seed)
    model = TinyConvNet(in_channels=channels, side=side).eval()
    x = torch.rand(batch_size, channels, side, side)
    y = torch.randint(0, 10, (batch_size,))
    attack = PGD(norm=norm, eps=eps, step_size=max(eps, 1e-3) / 2, steps=steps, random_start=random_start,
                 loss=loss, track_best=bool(seed % 2))
    x_adv = attack(model, x, y)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
    assert x_adv.shape == x.shape
    assert torch.all(size <= eps * (1 + 1e-5) + 1e-6)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_attack_leaves_model_state_unchanged(tiny_model, batch):
    x, y = batch
    model = tiny_model.train()
    model.net[-1].requires_grad_(False)  # a mixed requires_grad state must survive too
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    for attack in (PGD(eps=0.1, steps=3), TradesKL(eps=0.1, steps=3), PGD(eps=0.1, steps=2, model_mode="train")):
        attack(model, x, y)
        assert model.training and all(m.training for m in model.modules())
        assert [p.requires_grad for p in model.parameters()] == flags
        assert all(p.grad is None for p in model.parameters())
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k])


def test_attack_runs_in_eval_mode_by_default(batch):
    x, y = batch
    seen = []
    model = TinyConvNet()
    model.register_forward_pre_hook(lambda m, inp: seen.append(m.training))
    model.train()
    PGD(eps=0.1, steps=2)(model, x, y)
    assert seen and not any(seen)
    seen.clear()
    PGD(eps=0.1, steps=2, model_mode="train")(model, x, y)
    assert seen and all(seen)


def test_best_iterate_is_at_least_as_strong_as_last(tiny_model, batch):
    x, y = batch
    common = dict(eps=0.3, step_size=0.2, steps=10, random_start=False)  # large steps oscillate
    last = PGD(**common)(tiny_model, x, y)
    best = PGD(**common, track_best=True)(tiny_model, x, y)
    with torch.no_grad():
        fooled_last = tiny_model(last).argmax(1) != y
        fooled_best = tiny_model(best).argmax(1) != y
        loss_last = F.cross_entropy(tiny_model(last), y, reduction="none")
        loss_best = F.cross_entropy(tiny_model(best), y, reduction="none")
    assert torch.all(fooled_best >= fooled_last)
    same = fooled_best == fooled_last
    assert torch.all(loss_best[same] >= loss_last[same] - 1e-6)


def test_restarts_never_weaker_than_each_run(tiny_model, batch):
    x, y = batch
    torch.manual_seed(3)
    single = PGD(eps=0.1, step_size=0.02, steps=5)(tiny_model, x, y)
    torch.manual_seed(3)  # the first restart repeats the single run exactly
    multi = PGD(eps=0.1, step_size=0.02, steps=5, restarts=3)(tiny_model, x, y)
    with torch.no_grad():
        f_single = tiny_model(single).argmax(1) != y
        f_multi = tiny_model(multi).argmax(1) != y
    assert torch.all(f_multi >= f_single)


def test_cw_loss_is_the_margin():
    logits = torch.tensor([[2.0, 1.0, 0.5], [0.0, 3.0, 1.0]])
    y = torch.tensor([0, 2])
    torch.testing.assert_close(cw_margin(logits, y), torch.tensor([-1.0, 2.0]))


def test_pgd_cw_increases_the_margin(tiny_model, batch):
    x, y = batch
    x_adv = PGD(eps=0.1, step_size=0.01, steps=10, random_start=False, loss="cw")(tiny_model, x, y)
    with torch.no_grad():
        assert cw_margin(tiny_model(x_adv), y).mean() > cw_margin(tiny_model(x), y).mean()


def test_trades_kl_increases_divergence_and_stays_in_budget(tiny_model, batch):
    x, y = batch
    torch.manual_seed(0)
    x_adv = TradesKL(eps=0.1, step_size=0.02, steps=10)(tiny_model, x, y)
    with torch.no_grad():
        p = torch.softmax(tiny_model(x), 1)
        kl = F.kl_div(F.log_softmax(tiny_model(x_adv), 1), p, reduction="batchmean")
    assert kl > 1e-3
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6


@pytest.mark.parametrize("kwargs, message", [
    (dict(eps=-0.1), "eps must be >= 0"),
    (dict(steps=0), "steps must be >= 1"),
    (dict(step_size=0.0), "step_size must be > 0"),
    (dict(norm="l1"), "norm must be one of"),
    (dict(loss="hinge"), "loss must be one of"),
    (dict(restarts=2, random_start=False), "restarts > 1 needs random_start=True"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PGD(**kwargs)
