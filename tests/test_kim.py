"""Seed 002 (Kim et al. 2019): networks, the 2-D toy data, the toy study's geometry, configs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig
from torch import nn

from robustxai.attacks import PGD
from robustxai.attacks.losses import LOSSES
from robustxai.analysis.toy_boundary import (ToyBoundaryStudy, boundary_normal, line_angle_deg, long_axis,
                                             nearest_boundary_point, on_manifold_share, summarise, write_table)
from robustxai.data.toy import COVARIANCE, TwoGaussiansDataModule
from robustxai.errors import ConfigError
from robustxai.models import KimCIFARCNN, KimMNISTCNN, KimToyMLP
from robustxai.tasks.analyze import build_study
from robustxai.tasks.common import build_datamodule, build_model
from robustxai.utils.config import validate_config
from tests.conftest import ROOT, compose_config

CONF = ROOT / "conf"


def compose_cfg(config_name: str, overrides: list[str], tmp_path: Path) -> DictConfig:
    return compose_config(config_name, overrides, tmp_path)


# -- networks (spec 1.2) ------------------------------------------------------------------------------
@pytest.mark.parametrize("cls, shape, params, widths", [
    (KimMNISTCNN, (2, 1, 28, 28), 832 + 51_264 + 12_846_080 + 10_250, [12_544, 1024]),
    (KimCIFARCNN, (2, 3, 32, 32), 896 + 9_248 + 18_496 + 36_928 + 2_097_664 + 5_130, [4096, 512]),
    (KimToyMLP, (2, 2), 384 + 258, [2, 128]),
])
def test_architectures_are_the_seeds(cls, shape, params, widths):
    model = cls()
    assert model(torch.rand(*shape)).shape == (2, 10 if cls is not KimToyMLP else 2)
    assert sum(p.numel() for p in model.parameters()) == params
    assert [m.in_features for m in model.modules() if isinstance(m, nn.Linear)] == widths
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Dropout)) for m in model.modules())


def test_mnist_cnn_has_one_pooling_layer_after_both_convs():
    layers = list(KimMNISTCNN().features)
    assert [type(m).__name__ for m in layers] == ["Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d"]
    assert sum(isinstance(m, nn.MaxPool2d) for m in KimCIFARCNN().features) == 2


@pytest.mark.parametrize("cls", [KimMNISTCNN, KimCIFARCNN, KimToyMLP])
def test_glorot_uniform_weights_and_zero_biases(cls):
    torch.manual_seed(0)
    for m in cls().modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach()
            receptive = w[0, 0].numel()
            fan_in, fan_out = w.shape[1] * receptive, w.shape[0] * receptive
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            assert torch.all(m.bias == 0)
            assert float(w.abs().max()) <= bound
            if w.numel() >= 10_000:  # uniform(-b, b) has variance b^2 / 3
                assert float(w.var()) == pytest.approx(bound ** 2 / 3, rel=0.05)


@pytest.mark.parametrize("cls, shape", [(KimMNISTCNN, (3, 1, 28, 28)), (KimCIFARCNN, (3, 3, 32, 32)),
                                        (KimToyMLP, (3, 2))])
def test_models_map_the_unit_box_to_the_seeds_units(cls, shape):
    torch.manual_seed(0)
    ours = cls()
    raw = cls(seed_units=False)
    raw.load_state_dict(ours.state_dict())
    x = torch.rand(*shape)
    torch.testing.assert_close(ours(x), raw(2 * x - 1))


def test_models_refuse_bad_sizes():
    with pytest.raises(ValueError, match="in_features must be >= 1"):
        KimToyMLP(in_features=0)
    with pytest.raises(ValueError, match="input_size must be >= 4"):
        KimCIFARCNN(input_size=2)


# -- the toy data (spec 5) ------------------------------------------------------------------------------
def seed_notebook_data(size: int = 3000):
    """Notebook 4.1's data cell, re-typed with NumPy's global generator as the seed runs it."""
    means = [[1.2, 0.1], [-1.2, -0.1]]
    cov = [[0.1, -0.01], [-0.01, 0.002]]
    np.random.seed(0)
    xs = np.concatenate([np.random.multivariate_normal(mean=means[i], cov=cov, size=size) for i in range(2)], axis=0)
    xs = (xs - np.min(xs)) / (np.max(xs) - np.min(xs)) * 2 - 1
    ys = np.concatenate([np.ones(shape=size) * i for i in range(2)], axis=0)
    data_train = np.c_[xs, ys]
    np.random.shuffle(data_train)
    return xs, ys, data_train[:, :2], data_train[:, 2]


@pytest.mark.parametrize("size", [3000, 50])
def test_toy_data_equal_the_seeds_generator(size):
    xs, ys, x_train, y_train = seed_notebook_data(size)
    dm = TwoGaussiansDataModule(size=size)
    dm.setup()
    x, y = dm.splits["train"]
    assert x.dtype == torch.float32 and x.shape == (2 * size, 2)
    np.testing.assert_allclose(x.double().numpy() * 2 - 1, x_train, atol=1e-7, rtol=0)  # float32 rounding only
    np.testing.assert_array_equal(y.numpy(), y_train)
    xt, yt = dm.splits["test"]
    np.testing.assert_allclose(xt.double().numpy() * 2 - 1, xs, atol=1e-7, rtol=0)
    np.testing.assert_array_equal(yt.numpy(), ys)


def test_toy_data_scaling_is_one_global_min_max():
    dm = TwoGaussiansDataModule()
    dm.setup("test")
    x, y = dm.splits["test"]
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0 and float(x[:, 0].min()) == 0.0  # x holds both extremes
    seed_y = x[:, 1] * 2 - 1
    assert -0.14 < float(seed_y.min()) < -0.13 and 0.10 < float(seed_y.max()) < 0.11  # spec 5: y in ~[-0.13, 0.11]
    means = (x[y == 0].mean(0) * 2 - 1, x[y == 1].mean(0) * 2 - 1)
    torch.testing.assert_close(means[0], torch.tensor([0.497, 0.023]), atol=2e-3, rtol=0)  # spec: ~(0.50, 0.02)
    torch.testing.assert_close(means[1], torch.tensor([-0.532, -0.063]), atol=2e-3, rtol=0)  # ~(-0.53, -0.06)
    # the long axis is the covariance's major eigenvector (scaling is the same on both axes)
    major = torch.linalg.eigh(torch.tensor(COVARIANCE, dtype=torch.float64))[1][:, -1].float()
    assert float(line_angle_deg(long_axis(x, y), major)) < 0.5


def test_toy_loader_walks_the_shuffled_copy_in_fixed_order():
    dm = TwoGaussiansDataModule(size=150)
    dm.setup("fit")
    assert dm.model_kwargs() == {"in_features": 2, "num_classes": 2}
    first = [b for b, _ in dm.train_dataloader()]
    second = [b for b, _ in dm.train_dataloader()]
    assert [len(b) for b in first] == [100, 100, 100]
    torch.testing.assert_close(torch.cat(first), dm.splits["train"][0])
    torch.testing.assert_close(torch.cat(first), torch.cat(second))
    shuffled = TwoGaussiansDataModule(size=150, shuffle=True)
    shuffled.setup("fit")
    assert not torch.equal(torch.cat([b for b, _ in shuffled.train_dataloader()]), shuffled.splits["train"][0])


# -- the toy study's geometry -------------------------------------------------------------------------
def linear_model(w: tuple[float, float], b: float) -> nn.Module:
    """margin(x) = z_1 - z_0 = w . x + b."""
    model = nn.Linear(2, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0.0], list(w)], dtype=torch.float64))
        model.bias.copy_(torch.tensor([0.0, b], dtype=torch.float64))
    return model


def test_nearest_boundary_point_and_normal_of_a_linear_boundary():
    w, b = torch.tensor([1.0, 2.0], dtype=torch.float64), -1.0
    model = linear_model((1.0, 2.0), b)
    center = torch.tensor([0.1, 0.1], dtype=torch.float64)
    expected = center - (w @ center + b) / (w @ w) * w  # the orthogonal projection onto w.x + b = 0
    point = nearest_boundary_point(model, center, radius=1.0, directions=3600, samples=500)
    assert float((point - expected).norm()) < 1e-3  # the nearest of 3600 rays: angular error ~ 1e-3 rad
    assert float(w @ point + b) == pytest.approx(0.0, abs=1e-9)  # bisection lands on the boundary
    normal = boundary_normal(model, point)
    torch.testing.assert_close(normal, w)
    # hand-computed: the angle between (1, 2) and the x axis is atan(2) = 63.435 degrees
    assert float(line_angle_deg(normal, torch.tensor([1.0, 0.0], dtype=torch.float64))) == pytest.approx(63.4349, abs=1e-3)
    assert float(line_angle_deg(-normal, torch.tensor([-1.0, 0.0], dtype=torch.float64))) == pytest.approx(63.4349, abs=1e-3)
    assert nearest_boundary_point(model, center, radius=0.1) is None  # the boundary is 0.31 away


def test_on_manifold_share_uses_the_mahalanobis_ellipse():
    a, b = math.sqrt(1.5), math.sqrt(0.015)  # four points with mean 0 and (unbiased) covariance diag(1, 0.01)
    reference = torch.tensor([[a, 0.0], [-a, 0.0], [0.0, b], [0.0, -b]], dtype=torch.float64)
    # squared Mahalanobis radii 0, 4, 9.0, 9.61 (x) and 10^2 (y); the 99% quantile of chi2(2) is 9.2103
    points = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 0.3], [3.1, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert float(on_manifold_share(points, reference, 0.99)) == pytest.approx(3 / 5)
    assert float(on_manifold_share(points, reference, 0.9)) == pytest.approx(2 / 5)  # quantile 4.605
    with pytest.raises(ValueError, match="quantile must be < 1"):
        on_manifold_share(points, reference, 1.0)


def test_summary_and_table(tmp_path):
    rows = [{"regime": r, "seed": s, "acc": 1.0, "robust_acc": 0.5, "tilt_deg": t, "on_manifold": 0.1,
             "arrow_deg": 3.0, "displacement": 0.5} for r, s, t in [("a", 0, 80.0), ("a", 1, 70.0), ("b", 0, 10.0)]]
    summary = summarise(rows, ["a", "b"])
    assert summary["a"]["tilt_deg"] == pytest.approx((75.0, math.sqrt(50.0)))
    assert summary["b"]["tilt_deg"] == (10.0, 0.0)
    markdown = write_table(tmp_path, rows, summary)
    assert "75.0000 ± 7.0711" in markdown and (tmp_path / "toy_boundary.csv").read_text().count("\n") == 4


# -- configs ----------------------------------------------------------------------------------------------
def test_toy_boundary_study_composes_and_builds(tmp_path):
    cfg = compose_cfg("analyze", ["study=toy_boundary"], tmp_path)
    validate_config(cfg)
    study = build_study(cfg)
    assert isinstance(study, ToyBoundaryStudy) and study.seeds == [0, 1, 2] and list(study.regimes) == [
        "standard", "weak", "strong"]
    weak = study.regimes["weak"](model=study.model())
    strong = study.regimes["strong"](model=study.model())
    # the seed's budgets halved: weak 0.25 -> 0.125, strong 0.5 -> 0.25, evaluation 1.0 -> 0.5, step 2 -> 1
    assert (weak.attack.norm, weak.attack.eps, weak.attack.step_size, weak.attack.steps) == ("l2", 0.125, 1.0, 40)
    assert strong.attack.eps == 0.25 and not strong.attack.random_start
    assert weak.attack.update == strong.attack.update == study.attack.update == "kim"
    assert (study.attack.eps, study.attack.step_size, study.attack.steps) == (0.5, 1.0, 40)
    assert isinstance(study.model(), KimToyMLP) and study.data.batch_size == 100 and study.epochs == 10


def test_analyze_needs_a_study(tmp_path):
    with pytest.raises(Exception, match="You must specify 'study'"):
        compose_cfg("analyze", [], tmp_path)


@pytest.mark.parametrize("override, message", [
    ("study.manifold_quantile=1.5", "manifold_quantile must be <= 1"),
    ("study.expected_order=[standard,medium]", "expected_order names ['medium']"),
    ("study.seeds=[]", "seeds must hold at least one seed"),
])
def test_bad_study_values_are_refused_naming_the_key(override, message, tmp_path):
    cfg = compose_cfg("analyze", ["study=toy_boundary", override], tmp_path)
    with pytest.raises(ConfigError, match="`study`") as err:
        build_study(cfg)
    assert message in str(err.value)


@pytest.mark.parametrize("model, data, shape", [("kim_mnist_cnn", "digits", (1, 28, 28)),
                                                 ("kim_cifar_cnn", "digits", (1, 28, 28)),
                                                 ("kim_toy_mlp", "two_gaussians", (2,))])
def test_model_configs_build_for_their_data(model, data, shape, tmp_path):
    cfg = compose_cfg("train", [f"model={model}", f"data={data}"], tmp_path)
    validate_config(cfg)
    datamodule = build_datamodule(cfg)
    net = build_model(cfg, datamodule)
    assert net(torch.rand(2, *shape)).shape == (2, datamodule.num_classes)


# -- the seed's PGD variants (spec 2, 8.3-8.4) --------------------------------------------------------------
def two_class_linear(w0: tuple[float, float], w1: tuple[float, float] = (0.0, 0.0)) -> nn.Module:
    """Bias-free logits z_k = w_k . x in float64 (hand-computable gradients)."""
    model = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([w0, w1], dtype=torch.float64))
    return model


def test_cw_kim_zero_masks_the_true_class_and_caps_at_500():
    logits = torch.tensor([[2.0, -1.0, -3.0], [1.0, 4.0, 0.0], [0.0, 600.0, 0.0]])
    y = torch.tensor([0, 0, 0])
    # z_w = max(0 (the zeroed true slot), -1, -3) = 0 -> -relu(2 - 0 + 500); z_w = 4 -> -relu(1 - 4 + 500);
    # the cap: relu(0 - 600 + 500) = 0
    torch.testing.assert_close(LOSSES["cw_kim"](logits, y), torch.tensor([-502.0, -497.0, 0.0]))
    torch.testing.assert_close(LOSSES["cw"](logits, y), torch.tensor([-3.0, 3.0, 600.0]))  # the -inf-masked margin


def test_cw_kim_gradient_ignores_negative_wrong_logits():
    # all wrong logits negative: only -z_y drives the attack (grad = -w_0), unlike the true margin (w_1 - w_0)
    model = two_class_linear((1.0, 0.0), (-1.0, -2.0))
    x = torch.tensor([[0.5, 0.5]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0])
    (g_kim,) = torch.autograd.grad(LOSSES["cw_kim"](model(x), y).sum(), x)
    (g_cw,) = torch.autograd.grad(LOSSES["cw"](model(x), y).sum(), x)
    torch.testing.assert_close(g_kim, torch.tensor([[-1.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(g_cw, torch.tensor([[-2.0, -2.0]], dtype=torch.float64))


def test_kim_l2_steps_by_hand():
    # cw_kim on z_0 = -(x1 + x2), z_1 = 0: the gradient is (1, 1) everywhere (z_w = 0, the cap inactive)
    model = two_class_linear((-1.0, -1.0))
    x0, y = torch.tensor([[0.9, 0.5]], dtype=torch.float64), torch.tensor([0])
    attack = PGD(norm="l2", eps=0.3, step_size=1.0, steps=2, random_start=False, loss="cw_kim", update="kim")
    # step 1: x0 + 1 * (1,1)/sqrt(2) -> delta of norm 1 -> projected to 0.3 along (1,1)/sqrt(2) -> x clipped to 1
    s = 0.3 / math.sqrt(2)
    # step 2: from (1, 0.5 + s) add (1,1)/sqrt(2); delta = (0.1 + r, s + r) with r = 1/sqrt(2); projected to 0.3
    r = 1 / math.sqrt(2)
    d = (0.1 + r, s + r)
    scale = 0.3 / math.hypot(*d)
    expected = torch.tensor([[1.0, 0.5 + d[1] * scale]], dtype=torch.float64)  # x clipped to the box again
    torch.testing.assert_close(attack(model, x0, y), expected, atol=1e-7, rtol=0)


def test_kim_l2_arithmetic_differs_from_madry_where_the_1e8_guards_bite():
    # a step of 1e-8: the seed's projection delta * min(eps, |delta|) / (|delta| + 1e-8) halves it
    model = two_class_linear((1.0, 0.0))  # cw_kim gradient -w_0 = (-1, 0), |g| = 1
    x0, y = torch.tensor([[0.5, 0.5]], dtype=torch.float64), torch.tensor([0])
    moved = {}
    for update in ("kim", "madry"):
        attack = PGD(norm="l2", eps=1.0, step_size=1e-8, steps=1, random_start=False, loss="cw_kim", update=update)
        moved[update] = float((x0 - attack(model, x0, y))[0, 0]) / 1e-8
    d = 1e-8 / (1 + 1e-8)  # |delta| after the guarded normalisation
    assert moved["kim"] == pytest.approx(d / (d + 1e-8) / (1 + 1e-8), rel=1e-6)  # = 0.49999999...
    assert moved["madry"] == pytest.approx(1.0, rel=1e-6)


def test_kim_linf_steps_by_hand():
    model = two_class_linear((-1.0, 1.0))  # cw_kim gradient (1, -1)
    x0, y = torch.tensor([[0.5, 0.5]], dtype=torch.float64), torch.tensor([0])
    attack = PGD(norm="linf", eps=0.03, step_size=0.02, steps=2, random_start=False, loss="cw_kim", update="kim")
    # (0.52, 0.48), then (0.54, 0.46) clipped to the eps-box [0.47, 0.53]
    torch.testing.assert_close(attack(model, x0, y), torch.tensor([[0.53, 0.47]], dtype=torch.float64))


def test_kim_random_start_lies_on_the_sphere():
    model = two_class_linear((0.0, 0.0))  # zero gradient: the iterate stays at its start
    x0 = torch.full((64, 2), 0.5, dtype=torch.float64)
    y = torch.zeros(64, dtype=torch.long)
    torch.manual_seed(0)
    kim = PGD(norm="l2", eps=0.1, step_size=0.05, steps=1, random_start=True, update="kim")(model, x0, y)
    madry = PGD(norm="l2", eps=0.1, step_size=0.05, steps=1, random_start=True)(model, x0, y)
    torch.testing.assert_close((kim - x0).norm(dim=1), torch.full((64,), 0.1, dtype=torch.float64), rtol=1e-6, atol=0)
    assert float((madry - x0).norm(dim=1).min()) < 0.05  # the default draws the radius uniformly


def test_kim_options_are_checked():
    with pytest.raises(ValueError, match="update must be one of 'madry', 'kim'"):
        PGD(update="seed")
    with pytest.raises(ValueError, match="untargeted"):
        PGD(loss="cw_kim", targeted=True)


@settings(max_examples=25, deadline=None)
@given(norm=st.sampled_from(["l2", "linf"]), eps=st.floats(0.0, 2.0), step=st.floats(1e-3, 3.0),
       random_start=st.booleans(), loss=st.sampled_from(["ce", "cw_kim"]), seed=st.integers(0, 2 ** 16))
def test_kim_update_keeps_budget_and_box(norm, eps, step, random_start, loss, seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.rand(6, 3, 2, 2)
    y = torch.randint(0, 3, (6,))
    attack = PGD(norm=norm, eps=eps, step_size=step, steps=3, random_start=random_start, loss=loss, update="kim")
    x_adv = attack(model, x, y)
    delta = (x_adv - x).flatten(1)
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    if norm == "l2":
        assert float(delta.norm(dim=1).max()) <= eps * (1 + 1e-5) + 1e-7
    else:
        assert float(delta.abs().max()) <= eps + 1e-6


# -- the seed's training grids (spec 1.5) as experiments ------------------------------------------------------
def sweep_jobs(experiment: str) -> list[list[str]]:
    """The override list of every job ``-m experiment=<experiment>`` launches (Hydra's basic sweeper)."""
    cfg = compose_config("train", [f"experiment={experiment}"], return_hydra_config=True)
    params = [f"{key}={value}" for key, value in (cfg.hydra.sweeper.params or {}).items()]
    overrides = OverridesParser.create().parse_overrides([f"experiment={experiment}", *params])
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


HALVED = {  # our units: the seed's [-1,1] budgets halved
    "mnist_l2": ("l2", 1.0, [0.5, 1.0, 2.0]), "mnist_linf": ("linf", 0.01, [0.025, 0.05, 0.1]),
    "fashion_mnist_l2": ("l2", 1.0, [0.5, 1.0, 2.0]), "fashion_mnist_linf": ("linf", 0.01, [0.025, 0.05, 0.1]),
    "cifar10_l2": ("l2", 1.0, [0.05, 0.2, 0.8]), "cifar10_linf": ("linf", 0.01, [0.025, 0.05, 0.1]),
    "cifar10_roar_l2": ("l2", 1.0, [round(0.04 * i, 4) for i in range(1, 21)]),
    "cifar10_roar_linf": ("linf", 0.01, [round(0.001 * i, 4) for i in range(1, 21)]),
}


@pytest.mark.parametrize("grid", sorted(HALVED))
def test_kim_grid_sweeps_expand_to_the_seeds_networks(grid, tmp_path):
    norm, step, eps_values = HALVED[grid]
    jobs = sweep_jobs(f"kim_{grid}")
    assert len(jobs) == 2 * len(eps_values)  # every eps with xent and the seed's CW
    seen = set()
    for job in (jobs[0], jobs[-1]):  # composing is slow: the first and the last job
        cfg = compose_cfg("train", job, tmp_path)
        validate_config(cfg)
        attack = cfg.method.attack
        assert cfg.method._target_ == "robustxai.methods.pgd_at.PGDAdversarialTraining"
        assert (attack.norm, attack.step_size, attack.steps, attack.random_start, attack["update"]) == (
            norm, step, 40, False, "kim")
        seen.add((attack.eps, attack.loss))
    assert sorted(float(o.split("=")[1]) for job in jobs for o in job if o.startswith("method.attack.eps=")) == sorted(
        2 * eps_values)
    assert {o for job in jobs for o in job if o.startswith("method.attack.loss=")} == {
        "method.attack.loss=ce", "method.attack.loss=cw_kim"}
    assert seen == {(eps_values[0], "ce"), (eps_values[-1], "cw_kim")}


@pytest.mark.parametrize("dataset, model, epochs, val_size", [("mnist", "KimMNISTCNN", 5, 5000),
                                                              ("fashion_mnist", "KimMNISTCNN", 5, 5000),
                                                              ("cifar10", "KimCIFARCNN", 20, 0)])
def test_kim_standard_networks_compose_with_the_seeds_settings(dataset, model, epochs, val_size, tmp_path):
    assert sweep_jobs(f"kim_{dataset}_standard") == [[f"experiment=kim_{dataset}_standard"]]
    cfg = compose_cfg("train", [f"experiment=kim_{dataset}_standard"], tmp_path)
    validate_config(cfg)
    assert cfg.model._target_ == f"robustxai.models.kim.{model}" and cfg.method._target_ == "robustxai.methods.natural.NaturalTraining"
    assert (cfg.data.batch_size, cfg.data.val_size, cfg.trainer.max_epochs) == (100, val_size, epochs)
    assert cfg.method.optimizer.lr == 1e-3 and cfg.method.optimizer._target_ == "torch.optim.Adam"
    assert (cfg.attack.pgd_l2.eps, cfg.attack.pgd_l2.step_size, cfg.attack.pgd_l2["update"]) == (0.2, 1.0, "kim")
    build_model(cfg, build_datamodule(cfg))
