"""Woods et al. training (seed 001 spec section 2): psi integrator, Lipschitz penalty, output selection,
double backprop, adversarial training in train mode, checkpoints, LR schedule, the four experiments."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor, nn

from robustxai.attacks.woods import WoodsAttack
from robustxai.data.base import TensorDataModule
from robustxai.methods.lipschitz import PsiIntegrator, draw_selection, input_gradient_penalty, selected_outputs
from robustxai.methods.woods import WoodsTraining
from robustxai.models.woods_resnet import WoodsResNet
from robustxai.utils.config import instantiate, validate_config
from tests.conftest import ROOT, compose_config

CONF = ROOT / "conf"
EXPERIMENTS = ["woods_standard", "woods_adv_train", "woods_robust", "woods_all"]


class SyntheticCIFAR(TensorDataModule):
    """A few seeded CIFAR-shaped images (3x32x32 in [0, 1]) whose mean colour depends on the class."""

    num_classes = 10
    input_shape = (3, 32, 32)

    def __init__(self, n_train: int = 16, n_test: int = 8, seed: int = 0, augment: bool = False,
                 **kwargs: object) -> None:
        super().__init__(**{"batch_size": 8, **kwargs, "download": False})   # CIFAR10DataModule's keys pass
        self.n_train, self.n_test, self.seed = n_train, n_test, seed

    def load(self, train: bool) -> tuple[Tensor, Tensor]:
        n = self.n_train if train else self.n_test
        g = torch.Generator().manual_seed(self.seed + (0 if train else 1))
        labels = torch.randint(0, 10, (n,), generator=g)
        tint = (labels.float() / 9.0).view(-1, 1, 1, 1) * torch.tensor([1.0, 0.5, -0.5]).view(1, 3, 1, 1)
        images = (0.5 * torch.rand(n, 3, 32, 32, generator=g) + 0.25 + 0.2 * tint).clamp(0, 1)
        return images, labels


def tiny_resnet(activation: str = "relu") -> WoodsResNet:
    """The seed's architecture with one block per stage and narrow widths (fast on CPU)."""
    torch.manual_seed(0)
    return WoodsResNet(activation=activation, blocks_per_stage=1, widths=(4, 8, 8))


def sgd(params, lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)


def quiet_trainer(**kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                    enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0)
    return L.Trainer(**{**defaults, **kwargs})


def seed_psi_reference(ces: list[float]) -> list[tuple[float, float]]:
    """The seed's _model_train_batch update in plain Python (math), giving (I, psi) after each batch."""
    out, integral = [], 0.0
    for ce in ces:
        integral += max(-0.01, min(1.0, -math.log(ce / 1.5)))
        integral = max(0.0, integral)
        out.append((integral, 220 * math.exp(0.02 * integral)))
    return out


# -- psi integrator -------------------------------------------------------------------------------
def test_psi_integrator_follows_the_seed_update_rule_with_clamp_and_persistence():
    # above target from the start (clamped at 0), far below (capped at +1), near target, above (-0.01)
    ces = [3.0, 2.0, 0.2, 1.4, 1.6, 3.0, 0.9, 1.5, 5.0, 5.0]
    integrator = PsiIntegrator()
    got = []
    for ce in ces:
        psi = float(integrator.update(torch.tensor(ce, dtype=torch.float32)))
        got.append((float(integrator.integral), psi))
    expected = seed_psi_reference([float(torch.tensor(ce, dtype=torch.float32)) for ce in ces])
    for (i_got, psi_got), (i_exp, psi_exp) in zip(got, expected):
        assert i_got == pytest.approx(i_exp, abs=1e-12) and psi_got == pytest.approx(psi_exp, rel=1e-12)
    assert got[0][0] == 0.0 and got[1][0] == 0.0        # CE above target at I = 0: clamped, psi stays psi_0
    assert got[2][0] == 1.0                               # -ln(0.2 / 1.5) = 2.01 is capped at eps_better
    assert integrator.psi().dtype == torch.float64


def test_psi_update_is_detached_and_handles_zero_loss():
    integrator = PsiIntegrator()
    ce = torch.tensor(0.5, requires_grad=True)
    psi = integrator.update(ce * 1.0)
    assert not psi.requires_grad
    integrator.update(torch.tensor(0.0))                 # -ln(0) = +inf, capped at +1 (the seed would crash)
    assert float(integrator.integral) == pytest.approx(2.0)


def test_psi_integrator_survives_a_weights_only_checkpoint_round_trip(tmp_path):
    method = WoodsTraining(tiny_resnet("half_huber"), sgd, lipschitz=True)
    for ce in (0.3, 0.7, 1.2):
        method.psi.update(torch.tensor(ce))
    path = tmp_path / "state.pt"
    torch.save(method.state_dict(), path)
    restored = WoodsTraining(tiny_resnet("half_huber"), sgd, lipschitz=True)
    assert float(restored.psi.integral) == 0.0
    restored.load_state_dict(torch.load(path, weights_only=True))
    assert restored.psi.integral.item() == method.psi.integral.item() != 0.0
    assert restored.psi.integral.dtype == torch.float64


@pytest.mark.parametrize("bad, message", [
    (dict(psi_0=-1.0), "psi_0 must be >= 0"), (dict(ce_target=0.0), "ce_target must be > 0"),
    (dict(eps_worse=-0.1), "eps_worse must be >= 0"), (dict(zeta=1.5), "zeta must be <= 1"),
    (dict(penalty_power=0.0), "penalty_power must be > 0")])
def test_bad_penalty_settings_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        WoodsTraining(tiny_resnet(), sgd, lipschitz=True, **bad)


# -- output selection -----------------------------------------------------------------------------
def test_selected_outputs_fair_logit_or_tandem_margin():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 5, (12,), generator=g)
    tandem = torch.arange(12) % 3 == 0
    fair = torch.randint(0, 5, (12,), generator=g)
    got = selected_outputs(logits, labels, tandem, fair)
    for i in range(12):
        y = int(labels[i])
        if tandem[i]:
            expected = logits[i, y] - max(float(logits[i, j]) for j in range(5) if j != y)
        else:
            expected = logits[i, int(fair[i])]
        assert float(got[i]) == pytest.approx(float(expected), abs=1e-12)


def test_tandem_margin_gradient_reaches_the_true_logit_and_the_runner_up_only():
    logits = torch.tensor([[5.0, 1.0, 3.0, -2.0], [0.0, 0.5, -1.0, 4.0]], requires_grad=True)
    labels = torch.tensor([0, 3])
    out = selected_outputs(logits, labels, torch.tensor([True, True]), torch.tensor([1, 1]))
    assert out.tolist() == [2.0, 3.5]                    # the true logit is never its own runner-up
    grad, = torch.autograd.grad(out.sum(), logits)
    assert grad.tolist() == [[1.0, 0.0, -1.0, 0.0], [0.0, -1.0, 0.0, 1.0]]


def test_draws_pick_tandem_with_probability_zeta_and_uniform_classes_including_the_true_one():
    n, c, zeta = 40000, 10, 0.2
    tandem, fair = draw_selection(n, c, zeta, generator=torch.Generator().manual_seed(3))
    sigma = math.sqrt(zeta * (1 - zeta) / n)
    assert abs(tandem.float().mean().item() - zeta) < 5 * sigma
    counts = torch.bincount(fair, minlength=c).double()
    assert counts.min() > 0 and (counts / n - 1 / c).abs().max() < 5 * math.sqrt(0.1 * 0.9 / n)
    assert not draw_selection(100, c, 0.0)[0].any() and draw_selection(100, c, 1.0)[0].all()


# -- the penalty and its double backprop -----------------------------------------------------------
class SmoothNet(nn.Module):
    """Tiny smooth classifier with batch norm (examples coupled in train mode), for float64 checks."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Softplus(),
                                 nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 6), nn.Tanh(),
                                 nn.Linear(6, 5))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def smooth_setup(train: bool = True):
    torch.manual_seed(0)
    model = SmoothNet().double().train(train)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (4,), generator=g)
    tandem = torch.tensor([True, False, True, False])
    fair = torch.tensor([2, 0, 4, 1])
    return model, x, y, tandem, fair


@pytest.mark.parametrize("train", [True, False])
def test_penalty_equals_mean_squared_input_gradient_from_the_full_jacobian(train):
    model, x, y, tandem, fair = smooth_setup(train)
    x_req = x.clone().requires_grad_(True)
    ours = input_gradient_penalty(selected_outputs(model(x_req), y, tandem, fair), x_req)

    def outputs(inp: Tensor) -> Tensor:
        return selected_outputs(model(inp), y, tandem, fair)

    jac = torch.autograd.functional.jacobian(outputs, x)           # (B, B, C, H, W): s_i w.r.t. x_k
    grad = jac.sum(0)                                              # d(sum_i s_i)/dx (BN couples examples)
    assert ours.item() == pytest.approx(grad.pow(2).mean().item(), rel=1e-12)
    diag = torch.stack([jac[i, i] for i in range(4)])
    if train:
        assert (grad - diag).abs().max() > 1e-6                    # cross-example terms in train mode
    else:
        assert (grad - diag).abs().max() < 1e-15


def test_penalty_power_other_than_two_and_missing_requires_grad():
    model, x, y, tandem, fair = smooth_setup()
    x_req = x.clone().requires_grad_(True)
    out = selected_outputs(model(x_req), y, tandem, fair)
    grad, = torch.autograd.grad(out.sum(), x_req, retain_graph=True)
    assert input_gradient_penalty(out, x_req, power=1.0).item() == pytest.approx(grad.abs().mean().item())
    with pytest.raises(ValueError, match="requires_grad"):
        input_gradient_penalty(model(x).sum(1), x)


def test_double_backprop_parameter_gradients_match_finite_differences():
    model, x, y, tandem, fair = smooth_setup(train=True)
    params = [p for p in model.parameters()]

    def loss_fn() -> Tensor:
        x_req = x.clone().requires_grad_(True)
        logits = model(x_req)
        ce = F.cross_entropy(logits, y)
        return ce + 3.0 * input_gradient_penalty(selected_outputs(logits, y, tandem, fair), x_req)

    grads = torch.autograd.grad(loss_fn(), params)
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        directions = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
        analytic = sum((gr * d).sum() for gr, d in zip(grads, directions)).item()
        h = 1e-5
        with torch.no_grad():
            for p, d in zip(params, directions):
                p.add_(d, alpha=h)
        up = loss_fn().item()
        with torch.no_grad():
            for p, d in zip(params, directions):
                p.add_(d, alpha=-2 * h)
        down = loss_fn().item()
        with torch.no_grad():
            for p, d in zip(params, directions):
                p.add_(d, alpha=h)
        assert (up - down) / (2 * h) == pytest.approx(analytic, rel=1e-6, abs=1e-9)
    # the penalty alone has a parameter gradient only through the double backprop
    x_req = x.clone().requires_grad_(True)
    pen = input_gradient_penalty(selected_outputs(model(x_req), y, tandem, fair), x_req, create_graph=True)
    assert sum(gr.abs().sum() for gr in torch.autograd.grad(pen, params, allow_unused=True)
               if gr is not None) > 0


# -- the method's loss ------------------------------------------------------------------------------
def test_robust_loss_is_ce_plus_psi_times_penalty_with_the_same_draws(monkeypatch):
    torch.manual_seed(0)
    model = tiny_resnet("half_huber").double().train()
    method = WoodsTraining(model, sgd, lipschitz=True)
    method.psi.integral.fill_(3.0)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(6, 3, 32, 32, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (6,), generator=g)
    draws = draw_selection(6, 10, 0.5, generator=torch.Generator().manual_seed(4))
    monkeypatch.setattr("robustxai.methods.woods.draw_selection", lambda *a, **k: draws)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # self.log outside a Trainer
        loss, _ = method.training_loss(x, y)
    # the seed's _model_train_batch, written out independently
    x_req = x.clone().requires_grad_(True)
    logits_ref = model(x_req)
    ce = -F.log_softmax(logits_ref, 1).gather(1, y[:, None])[:, 0].mean()
    integral = max(0.0, 3.0 + max(-0.01, min(1.0, -math.log(ce.item() / 1.5))))
    tandem, fair = draws
    true = logits_ref.gather(1, y[:, None])[:, 0]
    masked = logits_ref.clone().scatter(1, y[:, None], (logits_ref.detach().min() - 1).expand(6, 1))
    s = tandem.double() * (true - masked.max(1)[0]) + (1 - tandem.double()) * logits_ref.gather(1, fair[:, None])[:, 0]
    grad, = torch.autograd.grad(s.sum(), x_req, create_graph=True)
    expected = ce + 220 * math.exp(0.02 * integral) * grad.abs().pow(2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
    assert float(method.psi.integral) == pytest.approx(integral, abs=1e-12)
    p = next(model.parameters())
    ours, = torch.autograd.grad(loss, p)
    ref, = torch.autograd.grad(expected, p)
    assert torch.allclose(ours, ref, rtol=1e-8, atol=1e-12)


def test_psi_is_driven_by_the_ce_averaged_over_ddp_ranks():
    from types import SimpleNamespace

    method = WoodsTraining(tiny_resnet(), sgd, lipschitz=True)
    calls = []

    def reduce(value, reduce_op):                          # in place, as Lightning's DDP reduce
        calls.append(reduce_op)
        return value.add_(0.5).div_(2)                    # the "other rank" has CE 0.5: the mean is 0.75

    method._trainer = SimpleNamespace(world_size=2, strategy=SimpleNamespace(reduce=reduce))
    ce = torch.tensor(1.0)
    assert method._global_mean(ce).item() == 0.75 and calls == ["mean"] and ce.item() == 1.0
    method._trainer = None
    assert method._global_mean(torch.tensor(1.0)).item() == 1.0


def test_epoch_ce_is_the_mean_per_example_ce_of_the_trained_on_images():
    model = tiny_resnet().train()
    method = WoodsTraining(model, sgd)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)) for n in (5, 3)]
    per_example = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for x, y in batches:
            _, logits = method.training_loss(x, y)
            per_example.append(F.cross_entropy(logits, y, reduction="none").detach())
    assert method.train_ce_epoch.compute().item() == pytest.approx(torch.cat(per_example).mean().item(), rel=1e-6)


# -- adversarial training in train mode ------------------------------------------------------------
def bn_count(model: nn.Module) -> int:
    counts = {int(m.num_batches_tracked) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert len(counts) == 1
    return counts.pop()


@pytest.mark.parametrize("mode, track_best, forwards", [("plain", None, 8), ("l2min", False, 8), ("l2min", True, 9)])
def test_attack_forwards_update_bn_running_stats_in_train_mode(mode, track_best, forwards):
    model = tiny_resnet().train()
    attack = WoodsAttack(eps=0.01 if mode == "plain" else 0.1, steps=7, mode=mode, track_best=track_best,
                         sanity_check="off", model_mode="train")
    method = WoodsTraining(model, sgd, attack=attack)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for batch in range(2):
            method.training_loss(x, y)
            assert bn_count(model) == forwards * (batch + 1)   # steps (+1 best-tracking pass) + training forward
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_plain_adversarial_examples_stay_within_rms_eps_and_half_and_half_keeps_half_clean():
    model = tiny_resnet().train()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(48, 3, 32, 32, generator=g), torch.randint(0, 10, (48,), generator=g)
    adv = WoodsAttack(eps=0.01, steps=7, sanity_check="off", model_mode="train")(model, x, y)
    rms = (adv - x).pow(2).flatten(1).mean(1).sqrt()
    assert (rms <= 0.01 + 1e-6).all() and (rms > 0.005).all()
    torch.manual_seed(1)
    half = WoodsAttack(eps=0.01, steps=7, half_and_half=True, sanity_check="off", model_mode="train")(model, x, y)
    clean = (half == x).flatten(1).all(1)
    assert 12 <= int(clean.sum()) <= 36 and ((half - x).flatten(1).abs().amax(1)[~clean] > 0).all()


# -- optimiser and schedule -------------------------------------------------------------------------
def compose_cfg(overrides: list[str], tmp_path: Path) -> DictConfig:
    return compose_config("train", overrides, tmp_path)


def test_sgd_decays_every_parameter_and_lr_drops_at_epochs_170_and_195(tmp_path):
    cfg = compose_cfg(["method=woods"], tmp_path)
    method = instantiate(cfg.method, "method", model=tiny_resnet())
    config = method.configure_optimizers()
    opt, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "epoch"
    (group,) = opt.param_groups
    assert len(group["params"]) == len(list(method.parameters()))
    assert (group["momentum"], group["weight_decay"], group["nesterov"]) == (0.9, 1e-4, False)
    for epoch in range(200):
        seed_lr = 0.1
        for milestone in (170, 195, 200):          # the seed's per-epoch rule
            if epoch >= milestone:
                seed_lr *= 0.1
        assert opt.param_groups[0]["lr"] == pytest.approx(seed_lr, rel=1e-12), epoch
        opt.step()
        scheduler.step()


# -- Lightning: persistence across epochs, resume ---------------------------------------------------
class RecordStart(L.Callback):
    """Records the epoch and psi integral at which fitting starts (after any checkpoint restore)."""

    def on_train_start(self, trainer: L.Trainer, module: WoodsTraining) -> None:
        self.epoch, self.integral = trainer.current_epoch, float(module.psi.integral)


def fit_robust(max_epochs: int, root: Path, ckpt_path: str | None = None) -> tuple[WoodsTraining, RecordStart]:
    L.seed_everything(0, verbose=False)
    method = WoodsTraining(tiny_resnet("half_huber"), sgd, lipschitz=True, ce_target=4.0)
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=root, filename="last", save_top_k=1,
                                                     enable_version_counter=False)
    start = RecordStart()
    trainer = quiet_trainer(max_epochs=max_epochs, enable_checkpointing=True, callbacks=[checkpoint, start])
    trainer.fit(method, datamodule=SyntheticCIFAR(batch_size=8), ckpt_path=ckpt_path)
    return method, start


def test_psi_persists_across_epochs_and_resumes_from_a_checkpoint(tmp_path):
    full, _ = fit_robust(2, tmp_path / "full")
    # ce_target 4 > CE ~ 2.3: every batch adds min(1, ln(4 / CE)) > 0, so I only grows; 2 epochs x 2 batches
    assert float(full.psi.integral) > 4 * 0.3
    first, _ = fit_robust(1, tmp_path / "part")
    assert 0 < float(first.psi.integral) < float(full.psi.integral)
    ckpt = torch.load(tmp_path / "part" / "last.ckpt", weights_only=True)
    assert ckpt["state_dict"]["psi.integral"].item() == float(first.psi.integral)
    resumed, start = fit_robust(2, tmp_path / "part", ckpt_path=str(tmp_path / "part" / "last.ckpt"))
    assert start.epoch == 1 and start.integral == float(first.psi.integral)   # restored, not retrained
    assert float(resumed.psi.integral) == pytest.approx(float(full.psi.integral), rel=1e-9)
    for a, b in zip(resumed.model.state_dict().values(), full.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


# -- the four experiments ----------------------------------------------------------------------------
def shrink_to_synthetic(cfg: DictConfig) -> None:
    """Swap in the synthetic set and a one-block-per-stage net; 2 optimiser steps, no test, no logger."""
    with open_dict(cfg):
        cfg.data = OmegaConf.create({"_target_": "tests.test_woods_training.SyntheticCIFAR", "batch_size": 8})
        cfg.model.blocks_per_stage = 1
        cfg.model.widths = [4, 8, 8]
        cfg.trainer.max_steps = 2
        cfg.trainer.accelerator = "cpu"
        cfg.trainer.enable_progress_bar = False
        cfg.trainer.log_every_n_steps = 1
        cfg.logger = {}
        cfg.callbacks.pop("progress_bar", None)
        cfg.callbacks.pop("model_summary", None)
        cfg.test = False


SEED_SETTINGS = {  # experiment: (activation, attack mode or None, half_and_half, lipschitz)
    "woods_standard": ("relu", None, None, False),
    "woods_adv_train": ("relu", ("plain", 0.01, None), False, False),
    "woods_robust": ("half_huber", None, None, True),
    "woods_all": ("half_huber", ("l2min", 0.1, False), True, True),
}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_with_the_seed_settings_and_trains_two_steps(experiment, tmp_path):
    from robustxai.tasks.train import train

    cfg = compose_cfg([f"experiment={experiment}"], tmp_path)
    validate_config(cfg)
    activation, attack, half, lipschitz = SEED_SETTINGS[experiment]
    assert cfg.data._target_.endswith("CIFAR10DataModule") and cfg.data.batch_size == 128 and cfg.data.val_size == 0
    assert cfg.model._target_.endswith("WoodsResNet") and cfg.model.activation == activation
    assert cfg.trainer.max_epochs == 200 and list(cfg.method.scheduler.milestones) == [170, 195]
    assert cfg.trainer.sync_batchnorm is False
    assert list(cfg.attack) == ["ara"] and cfg.attack.ara.n_images == 1000 and cfg.attack.ara.steps == 450
    opt = cfg.method.optimizer
    assert (opt.lr, opt.momentum, opt.weight_decay, opt.nesterov) == (0.1, 0.9, 1e-4, False)
    assert cfg.method.lipschitz == lipschitz
    if attack is None:
        assert cfg.method.attack is None
    else:
        mode, eps, track_best = attack
        a = cfg.method.attack
        assert (a.mode, a.eps, a.steps, a.eps_overshoot, a.momentum, a.model_mode, a.half_and_half) == \
            (mode, eps, 7, 1.0, 0.0, "train", half)
        assert a.get("track_best") == track_best and a.sanity_check == "off"
    if lipschitz:
        m = cfg.method
        assert (m.zeta, m.penalty_power, m.psi_0, m.psi_rate, m.ce_target, m.eps_better, m.eps_worse) == \
            (0.2, 2.0, 220.0, 0.02, 1.5, 1.0, 0.01)

    shrink_to_synthetic(cfg)
    metrics = train(cfg)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2 and math.isfinite(metrics["train/ce_epoch"])
    assert ("train/psi" in metrics) == lipschitz and ("train/penalty" in metrics) == lipschitz
    if lipschitz:
        assert metrics["train/psi"] >= 220.0 and ckpt["state_dict"]["psi.integral"].dtype == torch.float64
    forwards = 1 if attack is None else 8                # the attack's 7 train-mode forwards + the training one
    assert int(ckpt["state_dict"]["model.pipe.4.num_batches_tracked"]) == 2 * forwards
    from robustxai.utils.checkpoint import load_model_weights

    fresh = WoodsResNet(activation=activation, blocks_per_stage=1, widths=(4, 8, 8))
    load_model_weights(fresh, tmp_path / "checkpoints" / "last.ckpt")   # eval loads model.* only (psi ignored)


def test_four_gpu_setup_of_the_prebuilt_nets_composes_with_per_gpu_batch_norm(tmp_path):
    cfg = compose_cfg(["experiment=woods_all", "trainer=ddp", "trainer.devices=4", "method.optimizer.lr=0.4"], tmp_path)
    validate_config(cfg)
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.sync_batchnorm is False and cfg.data.batch_size == 128


@pytest.mark.parametrize("data_dir", ["empty", "shared"])
def test_experiments_without_the_training_split_stop_with_a_dataset_error(data_dir, tmp_path):
    from robustxai.errors import DatasetError
    from robustxai.tasks.common import build_datamodule

    cfg = compose_cfg(["experiment=woods_standard", "data.download=false"], tmp_path)
    with open_dict(cfg):
        cfg.paths.data_dir = str(ROOT.parent / "shared" / "data") if data_dir == "shared" else str(tmp_path)
        cfg.paths.cache_dir = str(tmp_path / "cache")
    datamodule = build_datamodule(cfg)
    with pytest.raises(DatasetError, match="training split is not available.*data_batch_1"):
        datamodule.setup("fit")


@pytest.mark.slow
def test_woods_all_trains_under_ddp_on_two_cpu_processes(tmp_path):
    """Double backprop, the train-mode attack and the rank-averaged psi update under real DDP (gloo)."""
    from tests.conftest import run_cli

    run_cli("train", "experiment=woods_all", "data._target_=tests.test_woods_training.SyntheticCIFAR",
            "data.batch_size=4", "+model.blocks_per_stage=1", "+model.widths=[4,8,8]", "trainer=ddp_cpu",
            "trainer.max_epochs=2", "attack=[]", "logger=none", "test=false", "method.ce_target=4.0",
            f"hydra.run.dir={tmp_path}", env={"PYTHONPATH": str(ROOT)})
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4                      # 16 images / 2 ranks / batch 4 x 2 epochs
    integral = float(ckpt["state_dict"]["psi.integral"])
    assert 0.0 < integral <= 4.0                         # CE < ce_target = 4 here; each step adds at most 1
