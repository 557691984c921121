"""The shared attack contract: run() -> AttackResult, targeted PGD, target rules, objectives on the one PGD loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustxai.attacks import PGD, TradesKL
from robustxai.attacks.base import AttackResult, choose_targets
from robustxai.attacks.pgd import Objective

torchattacks = pytest.importorskip("torchattacks")


def test_targeted_pgd_equals_torchattacks_targeted_mode(tiny_model, batch):
    x, y = batch
    target = (y + 3) % 10
    ours = PGD(eps=0.1, step_size=0.01, steps=20, random_start=False, targeted=True, target_class="given")
    oracle = torchattacks.PGD(tiny_model, eps=0.1, alpha=0.01, steps=20, random_start=False)
    oracle.set_mode_targeted_by_label(quiet=True)
    torch.testing.assert_close(ours(tiny_model, x, target), oracle(x, target), rtol=0, atol=1e-6)


def test_run_reports_success_as_the_attack_defines_it(tiny_model, batch):
    x, y = batch
    result = PGD(eps=0.3, step_size=0.05, steps=20, random_start=False).run(tiny_model, x, y)
    with torch.no_grad():
        pred = tiny_model(result.x_adv).argmax(1)
    assert torch.equal(result.success, pred != y) and result.success.any()
    targeted = PGD(eps=0.3, step_size=0.05, steps=20, random_start=False, targeted=True, target_class="next")
    result = targeted.run(tiny_model, x, y)
    with torch.no_grad():
        pred = tiny_model(result.x_adv).argmax(1)
    assert torch.equal(result.target, (y + 1) % 10) and torch.equal(result.success, pred == result.target)
    assert result.success.float().mean() > 0.5  # a large budget reaches most targets


def test_call_and_run_return_the_same_examples(tiny_model, batch):
    x, y = batch
    attack = PGD(eps=0.1, step_size=0.01, steps=10, random_start=False, track_best=True)
    assert torch.equal(attack(tiny_model, x, y), attack.run(tiny_model, x, y).x_adv)


def test_target_rules():
    logits = torch.tensor([[0.0, 2.0, -1.0], [3.0, 1.0, 2.0]])
    y = torch.tensor([1, 2])
    assert choose_targets(logits, y, "given").tolist() == [1, 2]
    assert choose_targets(logits, y, "next").tolist() == [2, 0]
    assert choose_targets(logits, y, "least_likely").tolist() == [2, 1]
    torch.manual_seed(0)
    drawn = choose_targets(logits.repeat(500, 1), y.repeat(500), "random")
    assert (drawn != y.repeat(500)).all() and set(drawn.tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="target_class must be one of"):
        choose_targets(logits, y, "worst")


def test_trades_kl_is_pgd_with_the_kl_loss(tiny_model, batch):
    x, y = batch
    torch.manual_seed(0)
    trades = TradesKL(eps=0.1, step_size=0.01, steps=5, start="uniform")(tiny_model, x, y)
    torch.manual_seed(0)
    pgd = PGD(eps=0.1, step_size=0.01, steps=5, random_start=True, loss="kl")(tiny_model, x, y)
    assert torch.equal(trades, pgd)
    with pytest.raises(ValueError, match="no target class"):
        PGD(loss="kl", targeted=True)


def test_a_new_objective_reuses_the_loop(tiny_model, batch):
    """Overriding attack_objective is all a new inner maximisation needs (here: push the logit of class 0 up)."""

    class PushClassZero(PGD):
        def attack_objective(self, model, x, x_adv, targets) -> Objective:
            logits = model(x_adv)
            return logits[:, 0], logits

    x, y = batch
    x_adv = PushClassZero(eps=0.2, step_size=0.02, steps=10, random_start=False)(tiny_model, x, y)
    with torch.no_grad():
        assert (tiny_model(x_adv)[:, 0] > tiny_model(x)[:, 0]).all()
    assert (x_adv - x).abs().max() <= 0.2 + 1e-6


def test_attack_result_extras_and_selection():
    a = AttackResult(torch.zeros(3, 2), torch.tensor([False, True, False]), torch.ones(3), {"score": torch.zeros(3)})
    b = AttackResult(torch.ones(3, 2), torch.tensor([True, True, True]), torch.full((3,), 2.0), {"score": torch.ones(3)})
    assert torch.equal(a.score, torch.zeros(3))
    with pytest.raises(AttributeError, match="no field or extra 'margin'"):
        _ = a.margin
    mixed = a.select(torch.tensor([True, False, True]), b)
    assert mixed.x_adv[:, 0].tolist() == [1.0, 0.0, 1.0] and mixed.success.tolist() == [True, True, True]
    assert mixed.radius.tolist() == [2.0, 1.0, 2.0] and mixed.score.tolist() == [1.0, 0.0, 1.0]
    x = torch.zeros(3, 2, requires_grad=True)
    assert not AttackResult(x * 2, a.success).detached().x_adv.requires_grad


def test_cross_entropy_targeted_objective_descends_the_target_loss(tiny_model, batch):
    x, y = batch
    target = (y + 1) % 10
    attack = PGD(eps=0.05, step_size=0.01, steps=5, random_start=False, targeted=True, target_class="given")
    x_adv = attack(tiny_model, x, target)
    with torch.no_grad():
        before = F.cross_entropy(tiny_model(x), target, reduction="none")
        after = F.cross_entropy(tiny_model(x_adv), target, reduction="none")
    assert (after < before).float().mean() > 0.9
