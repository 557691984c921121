"""IG-NORM / IG-SUM-NORM (RAR): the loss-IG, its inner attack, the two methods and the 16 paper experiments."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients
from torch import nn

from robustxai.attacks.attribution_norm import AttributionNormPGD
from robustxai.attacks.pgd import PGD
from robustxai.attributions.path_loss import clipped_cross_entropy, loss_path_ig, path_fractions
from robustxai.methods.ig_norm import IGNorm, IGSumNorm
from robustxai.methods.natural import NaturalTraining
from robustxai.methods.pgd_at import PGDAdversarialTraining
from robustxai.methods.schedules import PiecewiseConstantLR, sgd_decay_weights_only
from robustxai.utils.config import validate_config
from tests.conftest import ROOT, TinyConvNet, compose_config, results, run_cli, shared_dataset

ADAM = partial(torch.optim.Adam, lr=1e-3)
DATASETS = ["mnist", "fashion_mnist", "gtsrb", "flower17"]
METHODS = ["natural", "pgd_at", "ig_norm", "ig_sum_norm"]


class SmoothNet(nn.Module):
    """A tiny smooth (softplus) MLP: completeness and finite differences hold without kinks."""

    def __init__(self, side: int = 6, classes: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(side * side, 12), nn.Softplus(), nn.Linear(12, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def smooth_setup(dtype=torch.float64, n=5):
    torch.manual_seed(0)
    model = SmoothNet().to(dtype)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(n, 1, 6, 6, generator=g, dtype=dtype)
    x_adv = (x + 0.3 * (2 * torch.rand(x.shape, generator=g, dtype=dtype) - 1)).clamp(0, 1)
    return model, x, x_adv, torch.randint(0, 4, (n,), generator=g)


# -- the loss-IG ---------------------------------------------------------------------------------------------------
def test_clipped_cross_entropy_matches_cross_entropy_until_the_floor():
    logits = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 40.0]])
    y = torch.tensor([1, 0])
    out = clipped_cross_entropy(logits, y)
    torch.testing.assert_close(out[0], F.cross_entropy(logits[:1], y[:1]))
    assert out[1] == pytest.approx(-torch.log(torch.tensor(1e-10)).item(), rel=1e-6)  # p_y = e^-40 < 1e-10
    logits.requires_grad_(True)
    (grad,) = torch.autograd.grad(clipped_cross_entropy(logits, y).sum(), logits)
    assert torch.all(grad[1] == 0) and grad[0].abs().sum() > 0


def test_completeness_sum_of_ig_is_the_loss_difference():
    model, x, x_adv, y = smooth_setup()
    out = loss_path_ig(model, x, x_adv, y, steps=400, reduction="none", return_ig=True, create_graph=False)
    gap = clipped_cross_entropy(model(x_adv), y) - clipped_cross_entropy(model(x), y)
    torch.testing.assert_close(out.ig.flatten(1).sum(1), gap, atol=2e-3 * gap.abs().max().item(), rtol=0)
    torch.testing.assert_close(out.norm, out.ig.abs().flatten(1).sum(1))
    torch.testing.assert_close(out.end_logits, model(x_adv))


def test_ig_matches_captum_right_riemann_with_x_as_baseline(tiny_model, batch):
    x, y = batch
    x_adv = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    ours = loss_path_ig(tiny_model, x, x_adv, y, steps=16, return_ig=True, create_graph=False).ig
    theirs = IntegratedGradients(lambda z: clipped_cross_entropy(tiny_model(z), y.repeat(len(z) // len(y)))).attribute(
        x_adv, baselines=x, n_steps=16, method="riemann_right", internal_batch_size=len(x) * 16)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-4)


def test_every_keeps_points_a_2a_up_to_m_and_must_divide_m(tiny_model, batch):
    assert path_fractions(10, 5) == [0.5, 1.0]
    x, y = batch
    x_adv = (x + 0.1).clamp(0, 1)
    cheap = loss_path_ig(tiny_model, x, x_adv, y, steps=50, every=5, return_ig=True, create_graph=False)
    coarse = loss_path_ig(tiny_model, x, x_adv, y, steps=10, every=1, return_ig=True, create_graph=False)
    torch.testing.assert_close(cheap.ig, coarse.ig)
    with pytest.raises(ValueError, match="approx_factor.*must divide"):
        loss_path_ig(tiny_model, x, x_adv, y, steps=50, every=7)
    with pytest.raises(ValueError, match="must divide"):
        AttributionNormPGD(ig_steps=50, approx_factor=3)


def test_reductions_and_chunked_passes_agree(tiny_model, batch):
    x, y = batch
    x_adv = (x + 0.05).clamp(0, 1)
    per = loss_path_ig(tiny_model, x, x_adv, y, steps=6, reduction="none", create_graph=False).norm
    total = loss_path_ig(tiny_model, x, x_adv, y, steps=6, reduction="sum", create_graph=False).norm
    mean = loss_path_ig(tiny_model, x, x_adv, y, steps=6, reduction="mean", create_graph=False).norm
    chunked = loss_path_ig(tiny_model, x, x_adv, y, steps=6, reduction="none", create_graph=False, max_batch=33)
    torch.testing.assert_close(total, per.sum())
    torch.testing.assert_close(mean, per.mean())
    torch.testing.assert_close(chunked.norm, per)
    torch.testing.assert_close(chunked.end_logits, tiny_model(x_adv))


def test_gradient_of_r_wrt_parameters_matches_finite_differences():
    model, x, x_adv, y = smooth_setup(n=3)
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())

    def r(*ps):
        state = dict(zip(names, ps))
        fn = lambda z: torch.func.functional_call(model, state, (z,))  # noqa: E731
        return loss_path_ig(fn, x, x_adv, y, steps=5, reduction="sum").norm

    assert torch.autograd.gradcheck(r, params, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradient_of_r_wrt_the_endpoint_matches_finite_differences():
    model, x, x_adv, y = smooth_setup(n=2)
    for p in model.parameters():
        p.requires_grad_(False)
    fn = lambda z: loss_path_ig(model, x, z, y, steps=5, every=1).norm  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x_adv.clone().requires_grad_(True),), eps=1e-6, atol=1e-6, rtol=1e-4)


# -- the inner attack ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("objective", ["ig_norm", "ig_sum_norm"])
def test_attack_stays_in_budget_and_box_and_keeps_the_model(tiny_model, batch, objective):
    x, y = batch
    x = x.clone()
    x[:, :, :3] = 0.0  # pixels at the box edge: the random start must be clipped too
    attack = AttributionNormPGD(eps=0.1, step_size=0.03, steps=3, objective=objective, ig_steps=6, approx_factor=2)
    state = copy.deepcopy(tiny_model.state_dict())
    tiny_model.train()
    x_adv = attack(tiny_model, x, y)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad and tiny_model.training
    assert all(torch.equal(v, tiny_model.state_dict()[k]) for k, v in state.items())
    assert all(p.requires_grad and p.grad is None for p in tiny_model.parameters())


def test_random_start_is_mandatory_for_ig_norm_and_clipped_to_the_box():
    with pytest.raises(ValueError, match="random_start must be true.*never move"):
        AttributionNormPGD(objective="ig_norm", random_start=False)
    AttributionNormPGD(objective="ig_sum_norm", random_start=False)  # CE moves it: allowed
    attack = AttributionNormPGD(eps=0.5, step_size=0.01, steps=1, ig_steps=2, approx_factor=2)
    x = torch.zeros(4, 1, 6, 6)
    start = attack._project(x + attack._random_delta(x), x)
    assert start.min() >= 0 and start.max() > 0


@pytest.mark.parametrize("objective", ["ig_norm", "ig_sum_norm"])
def test_attack_objective_increases_over_steps(objective):
    model, x, _, y = smooth_setup(dtype=torch.float32, n=32)
    attack = AttributionNormPGD(eps=0.3, step_size=0.03, steps=1, objective=objective, beta=1.0, ig_steps=10,
                                approx_factor=2)
    torch.manual_seed(5)
    start = attack._project(x + attack._random_delta(x), x)
    values = []
    x_adv = start
    for _ in range(8):
        values.append(attack.batch_objective(model, x, x_adv, y).item())
        x_adv = x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(attack.batch_objective(model, x, x_adv, y), x_adv)
        x_adv = attack._project(attack._step(x_adv.detach(), grad), x)
    values.append(attack.batch_objective(model, x, x_adv, y).item())
    assert values[-1] > (1.5 if objective == "ig_norm" else 1.05) * values[0], values
    assert sum(b > a for a, b in zip(values, values[1:])) >= 6, values


def test_ig_sum_norm_attack_with_beta_zero_is_pgd(tiny_model, batch):
    x, y = batch
    torch.manual_seed(3)
    ours = AttributionNormPGD(eps=0.1, step_size=0.02, steps=4, objective="ig_sum_norm", beta=0.0)(tiny_model, x, y)
    torch.manual_seed(3)
    pgd = PGD(eps=0.1, step_size=0.02, steps=4)(tiny_model, x, y)
    assert torch.equal(ours, pgd)


# -- the methods -----------------------------------------------------------------------------------------------------
def small_attack(objective: str, beta: float = 1.0) -> AttributionNormPGD:
    return AttributionNormPGD(eps=0.1, step_size=0.03, steps=2, objective=objective, beta=beta, ig_steps=6,
                              approx_factor=3)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_ig_norm_loss_is_clean_ce_plus_lambda_times_full_r(tiny_model, batch, reduction):
    x, y = batch
    attack = small_attack("ig_norm")
    torch.manual_seed(0)
    loss, logits = IGNorm(tiny_model, ADAM, attack, lam=0.7, ig_steps=6, reduction=reduction).training_loss(x, y)
    torch.manual_seed(0)
    x_adv = attack(tiny_model, x, y)
    r = loss_path_ig(tiny_model, x, x_adv, y, steps=6, reduction=reduction).norm
    ce = F.cross_entropy(tiny_model(x), y, reduction=reduction)
    torch.testing.assert_close(loss, ce + 0.7 * r)
    torch.testing.assert_close(logits, tiny_model(x))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_ig_sum_norm_loss_is_adversarial_ce_plus_beta_times_full_r(tiny_model, batch, reduction):
    x, y = batch
    attack = small_attack("ig_sum_norm", beta=0.5)
    torch.manual_seed(0)
    loss, logits = IGSumNorm(tiny_model, ADAM, attack, beta=0.5, ig_steps=6, reduction=reduction).training_loss(x, y)
    torch.manual_seed(0)
    x_adv = attack(tiny_model, x, y)
    r = loss_path_ig(tiny_model, x, x_adv, y, steps=6, reduction=reduction).norm
    ce = F.cross_entropy(tiny_model(x_adv), y, reduction=reduction)
    torch.testing.assert_close(loss, ce + 0.5 * r)
    torch.testing.assert_close(logits, tiny_model(x_adv))


def test_sum_reduction_is_batch_size_times_mean(tiny_model, batch):
    x, y = batch
    losses = {}
    for reduction in ("sum", "mean"):
        torch.manual_seed(0)
        losses[reduction], _ = IGNorm(tiny_model, ADAM, small_attack("ig_norm"), ig_steps=6,
                                      reduction=reduction).training_loss(x, y)
    torch.testing.assert_close(losses["sum"], len(x) * losses["mean"])


def test_method_and_attack_must_agree_on_beta(tiny_model):
    with pytest.raises(ValueError, match="one beta for both"):
        IGSumNorm(tiny_model, ADAM, small_attack("ig_sum_norm", beta=0.5), beta=1.0)


def train_steps(method, x, y, steps=3):
    optimizer = method.configure_optimizers()
    for i in range(steps):
        optimizer.zero_grad()
        loss, _ = method.training_loss(x[i::steps], y[i::steps])
        loss.backward()
        optimizer.step()
    return [p.detach() for p in method.model.parameters()]


def test_ig_norm_with_lambda_zero_is_natural_training(batch):
    x, y = batch
    torch.manual_seed(0)
    a, b = TinyConvNet(), TinyConvNet()
    b.load_state_dict(a.state_dict())
    torch.manual_seed(1)
    ours = train_steps(IGNorm(a, ADAM, small_attack("ig_norm"), lam=0.0, ig_steps=6), x, y)
    torch.manual_seed(1)
    natural = train_steps(NaturalTraining(b, ADAM), x, y)
    assert all(torch.equal(p, q) for p, q in zip(ours, natural))


def test_ig_sum_norm_with_beta_zero_is_pgd_adversarial_training(batch):
    x, y = batch
    torch.manual_seed(0)
    a, b = TinyConvNet(), TinyConvNet()
    b.load_state_dict(a.state_dict())
    torch.manual_seed(1)
    ours = train_steps(IGSumNorm(a, ADAM, small_attack("ig_sum_norm", beta=0.0), beta=0.0, ig_steps=6), x, y)
    torch.manual_seed(1)
    madry = train_steps(PGDAdversarialTraining(b, ADAM, PGD(eps=0.1, step_size=0.03, steps=2)), x, y)
    assert all(torch.equal(p, q) for p, q in zip(ours, madry))


def test_update_differentiates_through_the_input_gradients(batch):
    """With lam > 0 the update sees d/dtheta of R (double backprop): the gradients differ from lam = 0."""
    x, y = batch
    grads = []
    for lam in (0.0, 1.0):
        torch.manual_seed(0)
        model = TinyConvNet()
        torch.manual_seed(1)
        loss, _ = IGNorm(model, ADAM, small_attack("ig_norm"), lam=lam, ig_steps=6).training_loss(x, y)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert not torch.allclose(grads[0], grads[1])


def test_piecewise_lr_follows_tf_piecewise_constant_and_decay_skips_biases():
    model = TinyConvNet()
    optimizer = sgd_decay_weights_only(model.parameters(), lr=0.5, weight_decay=2e-4)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 2e-4 for p in g["params"]}
    assert decayed == {id(p) for p in model.parameters() if p.dim() > 1}
    scheduler = PiecewiseConstantLR(optimizer, boundaries=[2, 4], values=[0.001, 0.01, 0.001])
    lrs = []
    for _ in range(7):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == [0.001, 0.001, 0.001, 0.01, 0.01, 0.001, 0.001]  # TF: values[0] while step <= 2
    resumed = PiecewiseConstantLR(torch.optim.SGD(model.parameters(), lr=0.5), boundaries=[2, 4], values=[1, 2, 3])
    resumed.load_state_dict(scheduler.state_dict())  # what a checkpoint restores
    assert resumed.last_epoch == 7 and resumed.lr_at(resumed.last_epoch) == 0.001
    with pytest.raises(ValueError, match="one more entry"):
        PiecewiseConstantLR(optimizer, boundaries=[2], values=[0.1])


# -- configs and experiments -------------------------------------------------------------------------------------------
def compose_train(overrides, tmp_path):
    return compose_config("train", overrides, tmp_path)


def available(group: str, name: str) -> bool:
    return (ROOT / "conf" / group / f"{name}.yaml").exists()


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("method", METHODS)
def test_every_rar_experiment_composes_with_the_paper_settings(dataset, method, tmp_path):
    model = {"gtsrb": "rar_resnet_gtsrb", "flower17": "rar_resnet_flower17"}.get(dataset, "madry_cnn")
    if not (available("data", dataset) and available("threat", dataset) and available("model", model)):
        pytest.skip(f"data={dataset} or model={model} has not landed yet")
    cfg = compose_train([f"experiment=rar_{dataset}_{method}"], tmp_path)
    validate_config(cfg)
    m = cfg.method
    assert cfg.data.get("augment", True)  # GTSRB/Flower: the seed's offline augmentation
    assert cfg.data.batch_size == {"mnist": 50, "fashion_mnist": 50, "gtsrb": 64, "flower17": 16}[dataset]
    assert cfg.model._target_ == compose_train([f"model={model}"], tmp_path).model._target_
    steps = 25_000 if method == "natural" and dataset in ("mnist", "fashion_mnist") else (
        100_000 if dataset in ("mnist", "fashion_mnist") else 70_001)
    assert cfg.trainer.max_steps == steps and cfg.trainer.max_epochs == -1
    if dataset in ("mnist", "fashion_mnist"):
        assert m.optimizer._target_ == "torch.optim.Adam" and m.optimizer.lr == 1e-4 and m.optimizer.weight_decay == 0
        assert m.scheduler is None
    else:
        assert m.optimizer._target_.endswith("sgd_decay_weights_only") and m.optimizer.momentum == 0.9
        assert m.optimizer.weight_decay == 2e-4 and m.scheduler_interval == "step"
        scale = 0.1 if dataset == "flower17" and method.startswith("ig") else 1.0
        assert list(m.scheduler.boundaries) == [500, 60000]
        assert list(m.scheduler["values"]) == pytest.approx([0.001 * scale, 0.01 * scale, 0.001 * scale])
    if method.startswith("ig"):
        weight = {"mnist": (1.0, 0.1), "fashion_mnist": (1.0, 0.1), "gtsrb": (1.0, 1.0),
                  "flower17": (0.1, 0.1)}[dataset][method == "ig_sum_norm"]
        assert (m.lam if method == "ig_norm" else m.beta) == weight and m.reduction == "sum"
        assert m.ig_steps == 50 and m.attack.ig_steps == 50
        assert m.attack.approx_factor == (5 if dataset in ("mnist", "fashion_mnist") else 10)
        assert m.attack.objective == method and m.attack.random_start
        if method == "ig_sum_norm":
            assert m.attack.beta == m.beta
    if method != "natural":
        linf = cfg.threat.linf
        assert (m.attack.eps, m.attack.step_size, m.attack.steps) == (linf.eps, linf.step_size, linf.steps)
    eps = {"mnist": 0.3, "fashion_mnist": 0.1, "gtsrb": 8 / 255, "flower17": 8 / 255}[dataset]
    assert cfg.threat.linf.eps == pytest.approx(eps) and cfg.attack.pgd.eps == cfg.threat.linf.eps


@pytest.mark.parametrize("method", ["ig_norm", "ig_sum_norm"])
def test_generic_method_configs_compose_on_any_dataset(method, tmp_path):
    for data in ("mnist", "gtsrb") if available("data", "gtsrb") else ("mnist",):
        cfg = compose_train([f"method={method}", f"data={data}"], tmp_path)
        validate_config(cfg)
        assert cfg.method.attack.ig_steps == cfg.method.ig_steps
        assert cfg.method.attack.eps == cfg.threat.linf.eps


TINY = ["trainer.max_steps=2", "trainer.accelerator=cpu", "data.val_size=50", "data.test_subset=20",
        "+trainer.limit_val_batches=1", "method.ig_steps=4", "method.attack.approx_factor=2", "method.attack.steps=2",
        "attack.pgd.steps=2", "callbacks=none", "logger=csv"]


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["mnist", "gtsrb"])
def test_rar_ig_norm_experiment_trains_two_steps(dataset, tmp_path):
    if not available("data", dataset):
        pytest.skip(f"data={dataset} has not landed yet")
    data_dir = shared_dataset({"mnist": "MNIST", "gtsrb": "gtsrb"}[dataset])
    offline = ["data.split=test_images", "data.augment=false"] if dataset == "gtsrb" else []  # no train set offline
    run_cli("train", f"experiment=rar_{dataset}_ig_norm", *TINY, *offline, f"hydra.run.dir={tmp_path}",
            env={"DATA_DIR": str(data_dir)})
    metrics = results(tmp_path)
    assert 0.0 <= metrics["test/acc"] <= 1.0 and "test/robust_acc/pgd" in metrics


@pytest.mark.slow  # six training processes: ~100 s per method on a shared 2-core machine
@pytest.mark.parametrize("method", ["ig_norm", "ig_sum_norm"])
def test_killed_ig_run_resumes_to_the_same_result(method, tmp_path):
    args = ["data=digits", f"method={method}", "method.ig_steps=4", "method.attack.approx_factor=2",
            "method.attack.steps=1", "trainer.max_epochs=2", "trainer.accelerator=cpu", "attack.pgd.steps=2",
            "data.batch_size=256", "seed=3"]
    env = {"PYTHONPATH": f"{ROOT}:{__import__('os').environ.get('PYTHONPATH', '')}"}
    run_cli("train", *args, f"hydra.run.dir={tmp_path / 'whole'}")
    killed = tmp_path / "killed"
    proc = run_cli("train", *args, f"hydra.run.dir={killed}", "+callbacks.killer._target_=tests.helpers.KillAtStep",
                   "+callbacks.killer.step=7", env=env, check=False)
    assert proc.returncode == -9 and not (killed / "results.json").exists()
    run_cli("train", *args, f"hydra.run.dir={killed}", "ckpt_path=last")
    assert results(killed) == results(tmp_path / "whole")
    assert "train/ig_norm" in results(killed) or "train/ce" in results(killed)


def test_eps_warmup_uses_the_clean_input_and_a_zero_regulariser(tiny_model, batch):
    x, y = batch
    method = IGSumNorm(tiny_model, ADAM, small_attack("ig_sum_norm", beta=1.0), beta=1.0, ig_steps=6,
                       eps_warmup_steps=5)
    loss, logits = method.training_loss(x, y)  # global_step 0 < 5: clean inputs, R(x, x) = 0
    torch.testing.assert_close(loss, F.cross_entropy(tiny_model(x), y))
    full = loss_path_ig(tiny_model, x, x, y, steps=6).norm
    assert full.item() == 0.0
