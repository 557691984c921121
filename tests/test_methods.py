"""Training methods: each loss is what its paper says, and a few steps of each train."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from robustxai.attacks import PGD, TradesKL
from robustxai.data import DigitsDataModule
from robustxai.methods import TRADES, NaturalTraining, PGDAdversarialTraining
from robustxai.models import SmallCNN
from tests.conftest import TinyConvNet

ADAM = partial(torch.optim.Adam, lr=1e-3)


def test_natural_loss_is_clean_cross_entropy(tiny_model, batch):
    x, y = batch
    loss, logits = NaturalTraining(tiny_model, ADAM).training_loss(x, y)
    torch.testing.assert_close(loss, F.cross_entropy(tiny_model(x), y))


def test_pgd_at_loss_is_cross_entropy_on_adversarial_examples_only(tiny_model, batch):
    x, y = batch
    attack = PGD(eps=0.1, step_size=0.02, steps=3, random_start=False)
    loss, _ = PGDAdversarialTraining(tiny_model, ADAM, attack).training_loss(x, y)
    torch.testing.assert_close(loss, F.cross_entropy(tiny_model(attack(tiny_model, x, y)), y))


def test_trades_loss_and_its_beta_zero_reduction(tiny_model, batch):
    x, y = batch
    attack = TradesKL(eps=0.1, step_size=0.02, steps=3)
    torch.manual_seed(0)
    loss, _ = TRADES(tiny_model, ADAM, attack, beta=6.0).training_loss(x, y)
    torch.manual_seed(0)
    x_adv = attack(tiny_model, x, y)
    p = F.softmax(tiny_model(x), 1)
    kl = (p * (p.log() - F.log_softmax(tiny_model(x_adv), 1))).sum(1).mean()
    torch.testing.assert_close(loss, F.cross_entropy(tiny_model(x), y) + 6.0 * kl)
    loss0, _ = TRADES(tiny_model, ADAM, attack, beta=0.0).training_loss(x, y)
    torch.testing.assert_close(loss0, F.cross_entropy(tiny_model(x), y))


def test_trades_gradient_flows_through_both_distributions(batch):
    x, y = batch
    model = TinyConvNet()
    loss, _ = TRADES(model, ADAM, TradesKL(eps=0.1, step_size=0.02, steps=2), beta=1.0).training_loss(x, y)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("make", [
    lambda m: NaturalTraining(m, ADAM),
    lambda m: PGDAdversarialTraining(m, ADAM, PGD(eps=0.2, step_size=0.05, steps=3)),
    lambda m: TRADES(m, ADAM, TradesKL(eps=0.2, step_size=0.05, steps=3)),
])
def test_a_few_training_steps_of_each_method(make):
    torch.manual_seed(0)
    model = SmallCNN()
    before = [p.detach().clone() for p in model.parameters()]
    method = make(model)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=5, limit_val_batches=1, accelerator="cpu",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(method, datamodule=DigitsDataModule(batch_size=32, val_size=64))
    assert trainer.global_step == 5 and torch.isfinite(trainer.callback_metrics["train/loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_budget_schedule_uses_clean_inputs_then_ramps(tiny_model, batch):
    from robustxai.methods.adversarial import budget_fraction

    assert [budget_fraction(s, 2, 4) for s in range(7)] == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    x, y = batch
    method = PGDAdversarialTraining(tiny_model, ADAM, PGD(eps=0.2, step_size=0.05, steps=2), eps_warmup_steps=1,
                                    eps_ramp_steps=4)
    assert torch.equal(method.adversarial(x, y), x)  # global_step 0: still warming up
    scaled = method.attack.rescaled(0.25)
    assert scaled.eps == pytest.approx(0.05) and scaled.step_size == pytest.approx(0.0125) and method.attack.eps == 0.2
