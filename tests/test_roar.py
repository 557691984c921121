"""ROAR / KAR: occlusion, the interpretability score, batched retraining, the studies and the gradient figures."""

from __future__ import annotations

import functools
import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from robustxai.analysis.interpretability_score import (
    SEED_END,
    SEED_START,
    correlations,
    interpretability_score,
    kar_score,
    linear_fit,
    occlusion_curve,
    roar_score,
    trapezoid_auc,
)
from robustxai.analysis.occlusion import (
    AttributionRanker,
    channel_mean,
    occlude,
    occlusion_mask,
    random_mask,
    ranking_map,
    replaced_count,
    tie_break,
)
from robustxai.attributions import InputXGradient, Saliency
from tests.conftest import compose_config, run_cli

warnings.filterwarnings("ignore", message=r".*LeafSpec.*")


# -- occlusion --------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 4), h=st.integers(1, 7), w=st.integers(1, 7), fraction=st.floats(0.0, 1.0),
       levels=st.integers(1, 4), seed=st.integers(0, 1000))
def test_rank_rule_replaces_exactly_the_stated_fraction_even_with_ties(n, h, w, fraction, levels, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, levels, (n, h, w), generator=g).float()  # few levels: many ties
    roar, kar = occlusion_mask(scores, fraction, "roar"), occlusion_mask(scores, fraction, "kar")
    k = math.floor(fraction * h * w + 0.5)
    assert (roar.flatten(1).sum(1) == k).all() and (kar.flatten(1).sum(1) == h * w - k).all()
    assert torch.equal(roar, ~kar)  # complements
    assert replaced_count(fraction, h * w, "roar") == k and replaced_count(fraction, h * w, "kar") == h * w - k
    # every removed pixel scores at least as high as every kept one
    flat, removed = scores.flatten(1), roar.flatten(1)
    for i in range(n):
        if removed[i].any() and (~removed[i]).any():
            assert flat[i][removed[i]].min() >= flat[i][~removed[i]].max()


def test_rank_rule_removes_the_top_pixels_by_hand():
    scores = torch.tensor([[[0.1, 0.9], [0.5, 0.3]]])
    assert occlusion_mask(scores, 0.5, "roar").tolist() == [[[False, True], [True, False]]]
    assert occlusion_mask(scores, 0.25, "kar").tolist() == [[[True, False], [True, True]]]  # keeps only 0.9


def test_percentile_rule_is_the_seeds_numpy_rule():
    g = torch.Generator().manual_seed(3)
    scores = tie_break(torch.rand(5, 9, 11, generator=g).round(decimals=1), seed=1)  # ties broken by the noise
    for p in (0.1, 0.3, 0.5, 0.7, 0.9):
        for i in range(5):
            a = scores[i].numpy()
            thr = np.percentile(a, 100 * (1 - p))
            assert np.array_equal(occlusion_mask(scores, p, "roar", "percentile")[i].numpy(), a > thr)
            assert np.array_equal(occlusion_mask(scores, p, "kar", "percentile")[i].numpy(), a < thr)


def test_tie_break_noise_is_seeded_small_float64_and_breaks_ties():
    scores = torch.zeros(3, 4, 4)
    a, b, c = tie_break(scores, 1e-8, seed=5), tie_break(scores, 1e-8, seed=5), tie_break(scores, 1e-8, seed=6)
    assert a.dtype == torch.float64 and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) < 1e-8
    assert len(a[0].flatten().unique()) == 16  # all distinct: the ranking is now strict
    assert torch.equal(tie_break(scores, 0.0), scores.double())


def test_occlusion_replaces_every_channel_of_a_pixel_by_the_per_channel_training_mean():
    g = torch.Generator().manual_seed(0)
    train = torch.rand(20, 3, 5, 5, generator=g)
    mean = channel_mean(train)
    assert torch.allclose(mean, train.mean(dim=(0, 2, 3)), atol=1e-7)
    x = torch.rand(4, 3, 5, 5, generator=g)
    mask = occlusion_mask(torch.rand(4, 5, 5, generator=g), 0.3, "roar")
    out = occlude(x, mask, mean)
    m = mask.unsqueeze(1).expand_as(x)
    assert torch.equal(out[~m], x[~m])
    assert torch.equal(out.permute(0, 2, 3, 1)[mask], mean.expand(int(mask.sum()), 3))
    with pytest.raises(ValueError, match="one value per channel"):
        occlude(x, mask, mean[:2])


def test_random_baseline_rate_and_complementarity():
    shape = (200, 28, 28)
    for p in (0.1, 0.5, 0.9):
        roar, kar = random_mask(shape, p, "roar", seed=1), random_mask(shape, p, "kar", seed=1)
        assert torch.equal(roar, ~kar)
        n = roar.numel()
        assert abs(float(roar.float().mean()) - p) < 4 * math.sqrt(p * (1 - p) / n)  # Bernoulli(p) removals
        exact = random_mask(shape, p, "roar", seed=1, rule="exact")
        assert (exact.flatten(1).sum(1) == replaced_count(p, 784)).all()
    assert not torch.equal(random_mask(shape, 0.5, "roar", seed=1), random_mask(shape, 0.5, "roar", seed=2))


def test_ranking_map_sums_absolute_channels_and_resizes_feature_maps():
    maps = torch.tensor([[[[1.0, -2.0]], [[-3.0, 0.5]]]])  # (1, 2, 1, 2)
    assert ranking_map(maps).tolist() == [[[4.0, 2.5]]]
    assert ranking_map(torch.randn(2, 4, 4), size=(8, 8)).shape == (2, 8, 8)


def _ce_grad(model, x, target, units_scale=1.0):
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), target, reduction="sum")
    (g,) = torch.autograd.grad(loss, x)
    return g * units_scale


def test_ranker_uses_the_seeds_target_ce_at_the_predicted_label_in_seed_units(tiny_model, batch):
    x, _ = batch
    pred = tiny_model(x).argmax(1)
    grad = _ce_grad(tiny_model, x, pred)  # d CE / dx in our [0, 1] units
    seed_g = AttributionRanker(Saliency(), target="loss", seed_units=True)(tiny_model, x)
    ours_g = AttributionRanker(Saliency(), target="loss", seed_units=False)(tiny_model, x)
    assert torch.allclose(ours_g, grad.abs().sum(1), atol=1e-6)
    assert torch.allclose(seed_g, grad.abs().sum(1) / 2, atol=1e-6)  # d/dz with z = 2x - 1
    seed_gx = AttributionRanker(InputXGradient(), target="loss", seed_units=True)(tiny_model, x)
    assert torch.allclose(seed_gx, ((2 * x - 1) * grad / 2).abs().sum(1), atol=1e-6)  # the seed's GX
    logit = AttributionRanker(Saliency(), target="logit", seed_units=False)(tiny_model, x)
    assert torch.allclose(logit, Saliency()(tiny_model, x, pred).abs().sum(1), atol=1e-6)


# -- the score ------------------------------------------------------------------------------------------
def test_score_on_hand_computed_curves():
    # ROAR: curve 0.8 | 0.5 0.3 | 0.1 at removed 0, .25, .75, 1; baseline 0.8 | 0.7 0.6 | 0.1
    # differences 0, .2, .3, 0: area = .25*(0+.2)/2 + .5*(.2+.3)/2 + .25*(.3+0)/2 = .025 + .125 + .0375
    assert roar_score([0.25, 0.75], [0.5, 0.3], [0.7, 0.6], start=0.8, end=0.1) == pytest.approx(0.1875)
    # KAR, fractions kept .25/.75 -> removed .75/.25: curve 0.8 | (kept .75) 0.6 (kept .25) 0.4 | 0.1
    x, v = occlusion_curve("kar", [0.25, 0.75], [0.4, 0.6], 0.8, 0.1)
    assert x.tolist() == [0.0, 0.25, 0.75, 1.0] and v.tolist() == pytest.approx([0.8, 0.6, 0.4, 0.1])
    # baseline kept .25: 0.3, kept .75: 0.5 -> differences 0, .1, .1, 0: area = .0125 + .05 + .0125
    assert kar_score([0.25, 0.75], [0.4, 0.6], [0.3, 0.5], start=0.8, end=0.1) == pytest.approx(0.075)
    assert trapezoid_auc([0, 1], [1, 1]) == 1.0


def _seed_get_scores(accs, random_accs, kind):
    """The seed's 3.5 get_scores, re-typed: sklearn auc on its constant endpoints."""
    from sklearn.metrics import auc

    x = [0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]
    if kind == "roar":
        v, b = [0.7366, *accs, 0.1], [0.7366, *random_accs, 0.1]
        return auc(x, np.array(b) - np.array(v))
    v = list(reversed([0.1, *accs, 0.7366]))
    b = list(reversed([0.1, *random_accs, 0.7366]))
    return auc(x, np.array(v) - np.array(b))


def test_score_equals_the_seeds_formula_with_the_seeds_endpoints():
    g = np.random.default_rng(0)
    for _ in range(5):
        accs, rnd = g.uniform(0.1, 0.74, 5).tolist(), g.uniform(0.1, 0.74, 5).tolist()
        fractions = [0.1, 0.3, 0.5, 0.7, 0.9]
        assert roar_score(fractions, accs, rnd) == pytest.approx(_seed_get_scores(accs, rnd, "roar"), abs=1e-12)
        assert kar_score(fractions, accs, rnd) == pytest.approx(_seed_get_scores(accs, rnd, "kar"), abs=1e-12)
        assert interpretability_score("roar", fractions, accs, rnd, SEED_START, SEED_END) == roar_score(fractions, accs, rnd)


def test_score_refuses_endpoint_fractions():
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        roar_score([0.0, 0.5], [0.5, 0.4], [0.5, 0.4])


def test_correlations_and_fit_equal_scipy_and_numpy():
    from scipy import stats

    g = np.random.default_rng(1)
    x, y = g.uniform(size=9), g.uniform(size=9)
    x[3] = x[5]  # a tie
    r, rho = correlations(x.tolist(), y.tolist())
    assert r == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-6)
    assert rho == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-6)
    assert linear_fit(x, y) == pytest.approx(tuple(np.polyfit(x, y, 1)), abs=1e-10)


# -- batched retraining -----------------------------------------------------------------------------------
def test_batched_retraining_equals_sequential_lightning_retraining():
    from robustxai.analysis.roar import retrain_lightning, retrain_stacked
    from robustxai.methods.natural import NaturalTraining
    from robustxai.models.small_cnn import SmallCNN

    g = torch.Generator().manual_seed(0)
    data = [(torch.rand(70, 1, 8, 8, generator=g), torch.randint(0, 3, (70,), generator=g)) for _ in range(3)]

    def make():
        return SmallCNN(in_channels=1, num_classes=3, input_size=8, channels=(4, 6), hidden=8)

    opt = functools.partial(torch.optim.Adam, lr=1e-2)
    seeds = [1, 2, 1]  # two networks share an init, as repeats of one study do
    seq = [retrain_lightning(make, functools.partial(NaturalTraining, optimizer=opt), x, y, 3, s, epochs=2,
                             max_steps=7, batch_size=16) for (x, y), s in zip(data, seeds)]
    stacked = retrain_stacked(make, opt, data, seeds, epochs=2, max_steps=7, batch_size=16)
    moved = max(float((p - q).detach().abs().max()) for p, q in zip(make().parameters(), seq[0].parameters()))
    assert moved > 1e-3  # training did change the weights
    single = retrain_stacked(make, opt, data[:1], seeds[:1], epochs=2, max_steps=7, batch_size=16)  # plain loop
    for a, b in zip(seq, stacked + single):
        for p, q in zip(a.parameters(), b.parameters()):
            assert torch.allclose(p, q, atol=1e-6, rtol=0)
    for p, q in zip(seq[0].parameters(), single[0].parameters()):
        assert torch.allclose(p, q, atol=1e-6, rtol=0)


# -- configs ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("study", ["roar", "kar", "gradient_maps"])
def test_study_configs_compose_and_validate(study, tmp_path):
    from robustxai.utils.config import validate_config

    cfg = compose_config("analyze", [f"study={study}", "data@study.data=digits"], tmp_path)
    validate_config(cfg)
    assert cfg.study._target_.startswith("robustxai.analysis.")
    if study != "gradient_maps":
        assert cfg.study.experiment == study and set(cfg.study.attributions) == {"saliency", "input_x_gradient"}


# -- end to end ---------------------------------------------------------------------------------------------
def _fake_training_multirun(root, eps_values=(0.0, 0.1)):
    """A training multirun's layout (<job>/config.yaml + checkpoints/last.ckpt) with tiny, briefly trained nets."""
    from omegaconf import OmegaConf

    from robustxai.data.digits import digits_as_mnist
    from robustxai.models.small_cnn import SmallCNN

    x, y = digits_as_mnist()
    node = {"_target_": "robustxai.models.small_cnn.SmallCNN", "channels": [4, 8], "hidden": 16}
    for job, eps in enumerate(eps_values):
        torch.manual_seed(job)
        model = SmallCNN(channels=(4, 8), hidden=16)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for i in range(30):
            idx = torch.arange(i * 50, i * 50 + 50) % len(y)
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        d = root / str(job)
        (d / "checkpoints").mkdir(parents=True)
        (d / ".hydra").mkdir()
        (d / ".hydra" / "overrides.yaml").write_text(f"- method.attack.eps={eps}\n")
        method = {"_target_": "robustxai.methods.pgd_at.PGDAdversarialTraining",
                  "attack": {"norm": "l2", "eps": eps}} if eps else {"_target_": "robustxai.methods.natural.NaturalTraining"}
        OmegaConf.save(OmegaConf.create({"model": node, "method": method}), d / "config.yaml")
        torch.save(model.state_dict(), d / "checkpoints" / "last.ckpt")
    return root


TINY = ["data@study.data=digits", "study.fractions=[0.3,0.7]", "study.repeats=1", "study.epochs=1",
        "study.train_subset=256", "study.batch_size=64", "study.progress=false"]


def test_roar_through_the_cli_on_digits(tmp_path):
    grid = _fake_training_multirun(tmp_path / "grid")
    run_dir = tmp_path / "run"
    run_cli("analyze", "study=roar", f"study.models_dir={grid}", *TINY, "study.batched=true",
            f"hydra.run.dir={run_dir}")
    report = json.loads((run_dir / "results.json").read_text())
    metrics = report["metrics"]
    assert report["study"] == "roar"
    assert {"roar_scores.md", "roar_scores.csv", "roar_correlations.md", "roar_scores.png",
            "roar_curves.png"} <= set(report["files"])
    names = ["method.attack.eps=0.0", "method.attack.eps=0.1"]
    for a in ("saliency", "input_x_gradient"):
        for name in names:
            assert math.isfinite(metrics[f"test/score/{a}/{name}"])
            for p in ("0.3", "0.7"):
                assert 0.0 <= metrics[f"test/retrain_acc/{a}/{name}/p{p}"] <= 1.0
        assert f"test/pearson_eps/{a}/all" in metrics
    assert metrics["test/endpoint/end"] == pytest.approx(0.1)  # chance on 10 classes
    assert 0.0 <= metrics["test/endpoint/start"] <= 1.0  # measured: retrained on un-occluded images
    assert "| method.attack.eps=0.1 | 0.1000 | l2 |" in (run_dir / "roar_scores.md").read_text()


def test_staged_study_equals_the_one_process_study(tmp_path):
    """occlude, two retrain shards, score (as a multirun would run them) give the numbers of stage=all."""
    from hydra.utils import instantiate

    grid = _fake_training_multirun(tmp_path / "grid", eps_values=(0.0,))
    common = TINY + [f"study.models_dir={grid}", "study.end=measured", "~study.attributions.input_x_gradient"]

    def study(*extra):
        return instantiate(compose_config("analyze", ["study=kar", *common, *extra], tmp_path).study)

    whole = study().run(tmp_path / "whole")
    work = tmp_path / "work"
    study("study.stage=occlude", f"study.work_dir={work}").run(tmp_path / "s1")
    with pytest.raises(ValueError, match="no result yet"):
        study("study.stage=score", f"study.work_dir={work}").run(tmp_path / "s2")
    for shard in (0, 1):
        study("study.stage=retrain", f"study.work_dir={work}", "study.num_shards=2",
              f"study.shard={shard}").run(tmp_path / f"r{shard}")
    staged = study("study.stage=score", f"study.work_dir={work}").run(tmp_path / "s3")
    for key, value in staged.items():
        assert value == pytest.approx(whole[key], abs=1e-6, nan_ok=True), key
    with pytest.raises(ValueError, match="other settings"):
        study("study.stage=score", f"study.work_dir={work}", "study.fractions=[0.5]").run(tmp_path / "s4")


def test_a_bad_roar_value_fails_before_work_with_the_key_named(tmp_path):
    from robustxai.errors import ConfigError
    from robustxai.tasks.analyze import build_study

    cfg = compose_config("analyze", ["study=roar", "data@study.data=digits", "study.fractions=[0,0.5]",
                                     "study.models_dir=/nonexistent"], tmp_path)
    with pytest.raises(ConfigError, match=r"invalid config at `study`: fractions must be distinct values strictly "
                                          r"between 0 and 1"):
        build_study(cfg)
    cfg = compose_config("analyze", ["study=roar", "data@study.data=digits", "study.stage=retrain"], tmp_path)
    with pytest.raises(ConfigError, match="needs work_dir"):
        build_study(cfg)


# -- gradient figures ---------------------------------------------------------------------------------------
def test_seed_preprocess_clips_per_image_and_zeroes_below_a_positive_lower_percentile():
    from robustxai.analysis.gradient_maps import seed_preprocess

    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 2, 6, 6, generator=g, dtype=torch.float64)
    maps[2] = maps[2].abs() + 1.0  # image 2: every value positive, so its lower percentile is > 0
    out = seed_preprocess(maps, 10, 90)
    summed = maps.sum(1)
    for i in range(3):
        a = summed[i].numpy()
        lo, hi = np.percentile(a, 10), np.percentile(a, 90)
        expected = np.clip(a, lo, hi)
        if lo > 0:
            expected[a < lo] = 0.0
        assert np.allclose(out[i].numpy(), expected)
    assert (out[2] == 0).sum() > 0 and (out[0] == 0).sum() == 0


def test_loss_gradient_is_the_gradient_of_log_p_at_the_prediction(tiny_model, batch):
    from robustxai.analysis.gradient_maps import loss_gradient

    x, _ = batch
    grad, pred = loss_gradient(tiny_model, x, seed_units=False)
    assert torch.equal(pred, tiny_model(x).argmax(1))
    assert torch.allclose(grad, -_ce_grad(tiny_model, x, pred), atol=1e-6)
    seed, _ = loss_gradient(tiny_model, x, seed_units=True)
    assert torch.allclose(seed, grad / 2, atol=1e-6)


def test_gradient_maps_study_writes_the_figure_and_logs_it_to_wandb_offline(tmp_path, monkeypatch):
    from hydra.utils import instantiate

    from robustxai.utils.wandb import read_offline_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    grid = _fake_training_multirun(tmp_path / "grid")
    cfg = compose_config("analyze", ["study=gradient_maps", "data@study.data=digits", f"study.models_dir={grid}",
                                     "logger@study.loggers=wandb", "study.dpi=40"], tmp_path)
    metrics = instantiate(cfg.study).run(tmp_path / "run")
    assert (tmp_path / "run" / "gradient_maps.png").is_file()
    assert set(metrics) == {f"test/{k}/method.attack.eps={e}" for k in ("image_alignment", "correct")
                            for e in ("0.0", "0.1")}
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    logged = read_offline_run(runs[0])
    assert "analysis/gradient_maps" in json.dumps(logged, default=str)
