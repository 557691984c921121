"""study=manifold_distance: the KDE against scipy, the filters and distances recomputed by hand, the files."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import gaussian_kde as scipy_kde
from torch import nn

from robustxai.analysis.kde import gaussian_kde, kde_bandwidth, kde_peak
from robustxai.analysis.manifold_distance import (
    TEST_DATA,
    ManifoldDistanceStudy,
    attack_succeeded,
    expected_order,
    normalise_by_reference,
    projection_distance,
)
from robustxai.attacks import PGD
from robustxai.data import DigitsDataModule
from robustxai.models import SmallCNN
from robustxai.models.vaegan import KimVAEGAN
from tests.conftest import ROOT, compose_config



# -- the KDE ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("factor", [0.25, 0.1, 1.0])
def test_kde_equals_scipy(factor):
    rng = np.random.default_rng(0)
    data = np.concatenate([rng.normal(0.3, 0.05, 300), rng.normal(0.7, 0.1, 100)])
    grid = np.linspace(0, 1, 500)
    expected = scipy_kde(data, bw_method=factor)(grid)
    ours = gaussian_kde(torch.tensor(data), torch.tensor(grid), factor)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-10, atol=1e-12)
    # the seed's spelling: covariance_factor fixed to 0.25, then the covariance recomputed
    kde = scipy_kde(data)
    kde.covariance_factor = lambda: 0.25
    kde._compute_covariance()
    np.testing.assert_allclose(gaussian_kde(torch.tensor(data), torch.tensor(grid), 0.25).numpy(), kde(grid),
                               rtol=1e-10)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=2, max_size=40).filter(lambda v: np.std(v) > 1e-3),
       st.floats(0.05, 2.0))
def test_kde_equals_scipy_on_any_data(values, factor):
    data = np.array(values)
    grid = np.linspace(data.min() - 1, data.max() + 1, 37)
    np.testing.assert_allclose(gaussian_kde(torch.tensor(data), torch.tensor(grid), factor, chunk=64).numpy(),
                               scipy_kde(data, bw_method=factor)(grid), rtol=1e-8, atol=1e-12)


def test_kde_integrates_to_one_and_peaks_at_the_mode():
    data = torch.randn(2000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.1 + 0.4
    grid = torch.linspace(-1, 2, 3001, dtype=torch.float64)
    density, peak = kde_peak(data, grid)
    assert torch.trapezoid(density, grid).item() == pytest.approx(1.0, abs=1e-6)
    assert abs(peak.item() - 0.4) < 0.02
    assert kde_bandwidth(torch.tensor([0.0, 2.0]), 0.5).item() == pytest.approx(0.5 * math.sqrt(2.0))


def test_kde_refuses_degenerate_data():
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_kde(torch.tensor([1.0]), torch.zeros(3))
    with pytest.raises(ValueError, match="all equal"):
        gaussian_kde(torch.ones(5), torch.zeros(3))
    with pytest.raises(ValueError, match="1-D"):
        gaussian_kde(torch.ones(2, 2), torch.zeros(3))


# -- the measurements -------------------------------------------------------------------------------
class FlatProjection(nn.Module):
    """A stand-in VAE-GAN whose "manifold" is the flat images: P(x) = the image's mean everywhere."""

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x)


def test_projection_distance_and_normalisation_by_hand():
    x = torch.zeros(2, 1, 2, 2)
    x[0, 0, 0, 0] = 1.0  # mean 0.25: distance sqrt(0.75^2 + 3 * 0.25^2) = sqrt(0.75)
    x[1] = 0.5           # flat: distance 0
    torch.testing.assert_close(projection_distance(FlatProjection(), x), torch.tensor([math.sqrt(0.75), 0.0]))
    torch.testing.assert_close(normalise_by_reference(torch.tensor([1.0, 3.0, 5.0]), torch.tensor([1.0, 5.0, 2.0])),
                               torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match="all equal"):
        normalise_by_reference(torch.ones(2), torch.ones(3))
    assert attack_succeeded(torch.tensor([1, 2, 3]), torch.tensor([1, 0, 3])).tolist() == [False, True, False]


def test_vaegan_projection_is_stochastic_but_seeded():
    torch.manual_seed(0)
    vaegan = KimVAEGAN("mnist").eval()
    x = torch.rand(4, 1, 28, 28)
    a = projection_distance(vaegan, x, torch.Generator().manual_seed(1))
    b = projection_distance(vaegan, x, torch.Generator().manual_seed(1))
    c = projection_distance(vaegan, x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_expected_order_on_hand_built_peaks():
    def rows(test, peaks):
        out = [{"set": TEST_DATA, "filter": "all", "eps": None, "kde_peak": test}]
        return out + [{"set": n, "filter": "standard", "eps": e, "kde_peak": p} for n, e, p in peaks]

    good = rows(0.3, [("standard", 0.0, 0.64), ("e1", 1.0, 0.6), ("e4", 4.0, 0.42), ("e2", 2.0, 0.5)])
    assert expected_order(good, "standard") == 1.0
    assert expected_order(rows(0.3, [("standard", 0.0, 0.5), ("e1", 1.0, 0.6)]), "standard") == 0.0
    assert expected_order(rows(0.7, [("standard", 0.0, 0.64)]), "standard") == 0.0  # test data must be lowest
    assert math.isnan(expected_order(rows(0.3, [("standard", None, 0.64)]), "standard"))


# -- the study, end to end on the embedded digits ---------------------------------------------------
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("md")
    paths = {}
    for i, name in enumerate(("standard", "robust")):
        torch.manual_seed(i)
        torch.save(SmallCNN(channels=(4, 8), hidden=16).state_dict(), tmp / f"{name}.pt")
        paths[name] = tmp / f"{name}.pt"
    torch.save({}, tmp / "flat.pt")
    paths["flat"] = tmp / "flat.pt"
    return paths


SMALL = {"_target_": "robustxai.models.SmallCNN", "channels": [4, 8], "hidden": 16}
ATTACK = PGD(norm="l2", eps=2.0, step_size=0.5, steps=3, random_start=False)


def _study(checkpoints, **kwargs) -> ManifoldDistanceStudy:
    settings_ = {
        "vaegan_ckpt": str(checkpoints["flat"]), "vaegan_model": FlatProjection(),
        "classifiers": [{"name": "standard", "eps": 0.0, "ckpt_path": str(checkpoints["standard"]), "model": SMALL},
                        {"name": "robust", "eps": 1.0, "ckpt_path": str(checkpoints["robust"]), "model": SMALL}],
        "data": DigitsDataModule(batch_size=16), "attack": ATTACK, "n_images": 24, "batch_size": 10,
        "device": "cpu", "progress": False}
    settings_.update(kwargs)
    return ManifoldDistanceStudy(**settings_)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_study_keeps_the_right_attacks_and_measures_their_distances(checkpoints, tmp_path):
    results = _study(checkpoints).run(tmp_path)
    for name in ("distances.csv", "summary.csv", "summary.md", "kde.csv", "kde.png"):
        assert (tmp_path / name).is_file()
    # recompute everything independently: the digits test images, the attack, both filters, the distance
    data = DigitsDataModule()
    data.setup("test")
    x, y = data.splits["test"]
    x, y = x[:24].float(), y[:24]
    if x.max() > 1:
        x = x / 255.0
    nets = {}
    for name in ("standard", "robust"):
        nets[name] = SmallCNN(channels=(4, 8), hidden=16)
        nets[name].load_state_dict(torch.load(checkpoints[name], weights_only=True))
        nets[name].eval()
    rows = _read_csv(tmp_path / "distances.csv")
    by_set = {s: [r for r in rows if r["set"] == s] for s in (TEST_DATA, "standard", "robust")}
    test_d = (x - x.mean(dim=(1, 2, 3), keepdim=True)).flatten(1).norm(dim=1)
    np.testing.assert_allclose([float(r["distance"]) for r in by_set[TEST_DATA]], test_d.numpy(), atol=1e-5)
    normalised = [float(r["normalised"]) for r in by_set[TEST_DATA]]
    assert min(normalised) == pytest.approx(0.0, abs=1e-6) and max(normalised) == pytest.approx(1.0, abs=1e-6)
    std_clean = nets["standard"](x).argmax(1)
    for name, net in nets.items():
        x_adv = torch.cat([ATTACK(net, xb, yb) for xb, yb in zip(x.split(10), y.split(10))])
        with torch.no_grad():
            kept_std = nets["standard"](x_adv).argmax(1) != std_clean
            kept_own = net(x_adv).argmax(1) != net(x).argmax(1)
        d = (x_adv - x_adv.mean(dim=(1, 2, 3), keepdim=True)).flatten(1).norm(dim=1)
        np.testing.assert_allclose([float(r["distance"]) for r in by_set[name]], d.numpy(), atol=1e-5)
        assert [int(r["kept_standard"]) for r in by_set[name]] == kept_std.int().tolist()
        assert [int(r["kept_own"]) for r in by_set[name]] == kept_own.int().tolist()
        assert results[f"kept_fraction/{name}/standard"] == pytest.approx(kept_std.float().mean().item())
        assert results[f"kept_fraction/{name}/own"] == pytest.approx(kept_own.float().mean().item())
        if kept_std.sum() > 0:
            assert results[f"median/{name}/standard"] == pytest.approx(d[kept_std].median().item(), abs=1e-5)
    assert results["median/Test_Data"] == pytest.approx(test_d.median().item(), abs=1e-5)
    summary = _read_csv(tmp_path / "summary.csv")
    assert [(r["set"], r["filter"]) for r in summary] == [(TEST_DATA, "all"), ("standard", "standard"),
                                                          ("standard", "own"), ("robust", "standard"),
                                                          ("robust", "own")]
    assert set(results) >= {"order_ok/standard", "order_ok/own", "kde_peak/Test_Data", "robust_acc/robust"}
    assert all(isinstance(v, float) for v in results.values())


def test_study_refuses_bad_settings(checkpoints):
    entry = {"name": "robust", "ckpt_path": str(checkpoints["robust"]), "model": SMALL}
    with pytest.raises(ValueError, match="standard"):
        _study(checkpoints, classifiers=[entry])
    with pytest.raises(ValueError, match="unknown keys"):
        _study(checkpoints, classifiers=[{**entry, "name": "standard", "epsilon": 1}])
    with pytest.raises(ValueError, match="does not exist"):
        _study(checkpoints, classifiers=[{**entry, "name": "standard", "ckpt_path": "/nonexistent.ckpt"}]).run(Path("/tmp"))
    with pytest.raises(ValueError, match="n_images"):
        _study(checkpoints, n_images=0)


def test_config_composes_and_builds_the_study(checkpoints, tmp_path):
    if not (ROOT / "conf" / "analyze.yaml").is_file():
        pytest.skip("conf/analyze.yaml (the analyze entry point) is not in this checkout")
    from omegaconf import OmegaConf, open_dict

    from robustxai.utils.config import instantiate, validate_config

    classifiers = [{"name": "standard", "eps": 0.0, "ckpt_path": str(checkpoints["standard"]), "model": SMALL}]
    cfg = compose_config("analyze", ["study=manifold_distance", f"study.vaegan_ckpt={checkpoints['flat']}",
                                     "study.n_images=12", "study.attack.steps=2", "study.device=cpu",
                                     "study.progress=false"])
    assert cfg.study.attack.eps == 6.0 and cfg.study.attack.step_size == 1.0  # the seed's 12 and 2, halved
    assert cfg.study.data.test_subset == 12
    with open_dict(cfg):
        cfg.study.classifiers = classifiers
        cfg.study.vaegan_model = {"_target_": "tests.test_manifold_distance.FlatProjection"}
        cfg.study.data = OmegaConf.create({"_target_": "robustxai.data.DigitsDataModule", "test_subset": 12})
    validate_config(cfg)
    study = instantiate(cfg.study, "study")
    results = study.run(tmp_path)
    assert results["kept_fraction/standard/standard"] == results["kept_fraction/standard/own"]
