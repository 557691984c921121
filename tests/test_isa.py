"""ISA, the min-eps search, seed 000's AAI options and the eval=boopathy protocol (docs/isa.md).

Tiny BoopathyNets on 8x8 random images (28x28 for the callback and the protocol): fast on one core.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from conftest import build_everything, compose_config
from hypothesis import given, settings
from hypothesis import strategies as st

from robustxai.analysis.boopathy_protocol import BoopathyPGDProtocol, seed_permutation
from robustxai.analysis.isa_summary import (
    bound_check,
    monotone_curve,
    point_valid,
    summarize,
)
from robustxai.attacks.explanation import TopKAttack
from robustxai.attacks.isa import ISA, reached_target
from robustxai.attacks.pgd import PGD
from robustxai.attributions import CAM, GradCAMPlusPlus
from robustxai.attributions.discrepancy import (
    isa_class_index,
    isa_discrepancy,
    normalized_isa_discrepancy,
)
from robustxai.attributions.postprocess import Postprocess
from robustxai.metrics.functional import pearson
from robustxai.models import BoopathyNet

TOL = 1e-6


def tiny_net(seed: int = 0, side: int = 8) -> BoopathyNet:
    torch.manual_seed(seed)
    return BoopathyNet(arch="small", in_channels=1, num_classes=10).eval()


def tiny_batch(n: int = 6, side: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, side, side, generator=g), torch.randint(0, 10, (n,), generator=g)


def small_isa(**kwargs) -> ISA:
    settings_ = {"penalties": [1.0, 2.0], "rounds": 3, "steps": 3}
    settings_.update(kwargs)
    return ISA(**settings_)


# -- discrepancies, hand-computed --------------------------------------------------------------------
def test_isa_discrepancies_by_hand() -> None:
    clean = torch.zeros(1, 3, 2, 2)
    clean[0, 0] = torch.tensor([[0.0, 2.0], [4.0, 0.0]])          # class 0: range 4
    clean[0, 2] = torch.tensor([[1.0, 1.0], [1.0, 3.0]])          # class 2: range 2
    adv = clean.clone()
    adv[0, 0] += torch.tensor([[1.0, -1.0], [0.0, 0.0]])          # |d| = 2, ||d||_2^2 = 2
    adv[0, 1] += 3.0                                              # class 1: |d| = 12 (not in one/two class)
    adv[0, 2] += torch.tensor([[0.0, 0.0], [0.0, -2.0]])          # |d| = 2, ||d||_2^2 = 4
    y, t = torch.tensor([0]), torch.tensor([2])
    for classes, l1, l2, n1, n2 in (
            ("one_class", 2.0, 2.0, 2 / 4, 2 ** 0.5 / 4),
            ("two_class", 0.5 * (2 + 2), 0.5 * (2 + 4), 0.5 * (2 / 4 + 2 / 2), 0.5 * (2 ** 0.5 / 4 + 2 / 2)),
            ("all_class", (2 + 12 + 2) / 3, (2 + 36 + 4) / 3, None, None)):
        index, weights = isa_class_index(y, t, 3, classes)
        gather = index[:, :, None, None].expand(-1, -1, 2, 2)
        assert float(isa_discrepancy(clean.gather(1, gather), adv.gather(1, gather), weights, "l1")) == pytest.approx(l1)
        assert float(isa_discrepancy(clean.gather(1, gather), adv.gather(1, gather), weights, "l2")) == pytest.approx(l2)
        if n1 is not None:
            assert float(normalized_isa_discrepancy(clean.gather(1, gather), adv.gather(1, gather), weights, "l1")) == pytest.approx(n1)
            assert float(normalized_isa_discrepancy(clean.gather(1, gather), adv.gather(1, gather), weights, "l2")) == pytest.approx(n2)
    with pytest.raises(ValueError, match="classes must be one of"):
        isa_class_index(y, t, 3, "three_class")
    with pytest.raises(ValueError, match="norm must be"):
        isa_discrepancy(clean, adv, torch.ones(1, 3), "l3")


def test_pearson_equals_scipy() -> None:
    g = torch.Generator().manual_seed(3)
    a = torch.randn(5, 49, generator=g, dtype=torch.float64)
    b = a + 5 + torch.randn(5, 49, generator=g, dtype=torch.float64)
    ours = pearson(a, b)
    for i in range(5):
        assert float(ours[i]) == pytest.approx(scipy.stats.pearsonr(a[i].numpy(), b[i].numpy())[0], abs=1e-12)
    assert torch.isnan(pearson(torch.ones(1, 4), torch.rand(1, 4))).all()


# -- ISA: budget, box, brackets, success -------------------------------------------------------------
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 1000), eps_max=st.sampled_from([0.05, 0.3, 1.0]),
       classes=st.sampled_from(["one_class", "two_class", "all_class"]), norm=st.sampled_from(["l1", "l2"]),
       plusplus=st.booleans())
def test_isa_keeps_budget_and_box_and_brackets_are_monotone(seed, eps_max, classes, norm, plusplus) -> None:
    model, (x, y) = tiny_net(seed % 3), tiny_batch(seed=seed)
    torch.manual_seed(seed)
    attack = small_isa(classes=classes, discrepancy=norm, eps_max=eps_max, eps_start=min(0.05, eps_max),
                       attribution=GradCAMPlusPlus() if plusplus else CAM())
    result = attack.run(model, x, y)
    eps_adv = result.eps_adv
    assert (eps_adv <= eps_max + TOL).all() and (eps_adv >= 0).all()
    points, eps = result.extras[f"points_{classes}"], result.extras[f"eps_{classes}"]
    budgets = torch.cat([eps_adv[:, None], eps_adv[:, None] * torch.tensor(attack.penalties)], dim=1)
    linf = (points - x[:, None]).flatten(2).abs().amax(2)
    assert torch.allclose(linf, eps)
    assert (linf <= budgets + TOL).all()
    assert points.min() >= 0 and points.max() <= 1
    # stage 1: lo <= hi, hi never grows, lo never shrinks, the bracket narrows
    b = result.eps_brackets
    lo, hi = b[..., 0], b[..., 1]
    assert (lo <= hi + TOL).all()
    assert (hi[:, 1:] <= hi[:, :-1] + TOL).all() and (lo[:, 1:] >= lo[:, :-1] - TOL).all()
    assert ((hi - lo)[:, 1:] <= (hi - lo)[:, :-1] + TOL).all()
    assert torch.equal(eps_adv, hi[:, -1])
    # stage 2, per multiplier
    g = result.extras[f"gamma_brackets_{classes}"]
    glo, ghi = g[..., 0], g[..., 1]
    assert (glo <= ghi + TOL).all()
    assert (ghi[..., 1:] <= ghi[..., :-1] + TOL).all() and (glo[..., 1:] >= glo[..., :-1] - TOL).all()
    assert torch.equal(result.extras[f"gamma_{classes}"][:, 1:], glo[..., -1])
    assert (result.extras[f"gamma_{classes}"][:, 0] == 0).all()


def test_targeted_success_semantics() -> None:
    model, (x, y) = tiny_net(), tiny_batch(n=8)
    torch.manual_seed(0)
    result = small_isa(eps_max=1.0).run(model, x, y)
    target = result.target
    assert (target != y).all()
    with torch.no_grad():
        logits = model(result.x_adv)
        point_logits = model(result.extras["points_two_class"].flatten(0, 1)).view(8, 3, -1)
    assert torch.equal(result.success, reached_target(logits, target))
    assert torch.equal(result.success, logits.argmax(1) == target)
    per_point = reached_target(point_logits.flatten(0, 1), target.repeat_interleave(3)).view(8, 3)
    assert torch.equal(result.extras["success_two_class"], per_point)
    assert result.success.any(), "the test needs some successes to mean anything"
    # by hand: the target must beat every other logit strictly
    z = torch.tensor([[1.0, 3.0, 2.0], [2.0, 2.0, 0.0]])
    assert reached_target(z, torch.tensor([1, 1])).tolist() == [True, False]


def test_stage1_succeeds_at_eps_adv_and_gamma_zero_is_plain_attack() -> None:
    model, (x, y) = tiny_net(), tiny_batch(n=8)
    torch.manual_seed(0)
    attack = small_isa(mode="min_eps", penalties=[], eps_max=1.0, rounds=6)
    result = attack.run(model, x, y)
    found = result.eps_adv < 1.0  # stage 1 found an eps that works
    assert found.any()
    # where a bracket was found the final run at eps_adv reaches the target (the run that set hi did)
    assert result.success[found].all()
    assert torch.allclose(result.radius, (result.x_adv - x).flatten(1).abs().amax(1))


def test_stage1_equals_a_hand_written_bisection() -> None:
    """The seed's stage 1 written out in plain torch (its step rule and bisection) gives our eps_adv exactly."""
    from robustxai.attacks.losses import cw_margin

    model, (x, y) = tiny_net(1), tiny_batch(n=8, seed=7)
    t = (y + 3) % 10
    attack = small_isa(mode="min_eps", penalties=[], rounds=5, steps=4, target_class="given")
    ours = attack.min_eps(model, x, y, t)[1]
    eps, lo, hi = torch.full((8,), 0.05), torch.zeros(8), torch.ones(8)
    for p in model.parameters():
        p.requires_grad_(False)
    for _ in range(5):
        e = eps.view(-1, 1, 1, 1)
        x_adv = x.clone()
        for _ in range(4):
            x_adv.requires_grad_(True)
            (g,) = torch.autograd.grad(cw_margin(model(x_adv), t).clamp(min=-0.1).sum(), x_adv)
            x_adv = torch.min(torch.max(x_adv.detach() - 0.2 * e * torch.clamp(1000 * g, -1, 1), x - e), x + e).clamp(0, 1)
        with torch.no_grad():
            ok = cw_margin(model(x_adv), t) < 0
        hi, lo = torch.where(ok, eps, hi), torch.where(ok, lo, eps)
        eps = torch.where(ok, (lo + hi) / 2, torch.minimum(2 * eps, (lo + hi) / 2))
    assert torch.equal(ours, hi)
    assert (hi < 1).any()  # some image found a bracket, so the comparison is not trivial


def test_min_eps_bound_holds() -> None:
    """D_2class,l1(x, x') / (h w) >= 0.5 (z_y(x) - z_t(x)) wherever the targeted attack succeeds (spec 3)."""
    model, (x, y) = tiny_net(2, side=28), tiny_batch(n=10, side=28, seed=4)
    model = model.double()
    x = x.double()
    torch.manual_seed(1)
    result = small_isa(mode="min_eps", penalties=[], eps_max=1.0, rounds=4).run(model, x, y)
    t = result.target
    with torch.no_grad():
        cam_c, cam_a = model.cam(x), model.cam(result.x_adv)
        z_c, z_a = model(x), model(result.x_adv)
    index, w = isa_class_index(y, t, 10, "two_class")
    gather = index[:, :, None, None].expand(-1, -1, *cam_c.shape[2:])
    d = isa_discrepancy(cam_c.gather(1, gather), cam_a.gather(1, gather), w, "l1") / (cam_c.shape[2] * cam_c.shape[3])
    margin = 0.5 * (z_c.gather(1, y[:, None]) - z_c.gather(1, t[:, None])).squeeze(1)
    success = z_a.gather(1, t[:, None]).squeeze(1) >= z_a.gather(1, y[:, None]).squeeze(1)
    assert success.sum() >= 3, "the bound test needs successful attacks"
    assert (d[success] >= margin[success] - 1e-9).all()
    check = bound_check(margin, d, success)
    assert check.holds == 1.0 and check.min_slack >= -1e-9 and check.images == int(success.sum())
    # the bound is not vacuous: a made-up discrepancy below the margin fails the check
    assert bound_check(margin, margin - 1.0, success).holds == 0.0


def test_tradeoff_mode_runs_every_class_variant() -> None:
    model, (x, y) = tiny_net(), tiny_batch(n=4)
    result = small_isa(mode="tradeoff").run(model, x, y)
    for variant in ("all_class", "two_class", "one_class"):
        assert result.extras[f"points_{variant}"].shape == (4, 3, 1, 8, 8)
        # the three share stage 1: the same min-eps example at point 0
        assert torch.equal(result.extras[f"points_{variant}"][:, 0], result.extras["points_one_class"][:, 0])


def test_isa_config_errors() -> None:
    with pytest.raises(ValueError, match="penalties must be positive and strictly increasing"):
        ISA(penalties=[2.0, 1.0])
    with pytest.raises(ValueError, match="penalties .* must not be empty"):
        ISA(penalties=[])
    with pytest.raises(ValueError, match="mode"):
        ISA(mode="sneaky")
    with pytest.raises(ValueError, match="eps_start must be <= 1"):
        ISA(eps_start=2.0)


# -- summaries ------------------------------------------------------------------------------------------
def test_summary_matches_a_hand_computed_seed_aggregate() -> None:
    d = torch.tensor([[4.0, 5.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0], [6.0, 3.0, 0.0, 0.0]])
    eps = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], [0.2, 0.3, 0.4, 0.5]])
    valid = torch.tensor([[True, True, True, True], [True, True, True, True], [True, True, False, False]])
    mono, _ = monotone_curve(d, valid)
    assert mono[0].tolist() == [4.0, 4.0, 2.0, 2.0]
    s = summarize(d, eps, valid)
    # image 1 is flat (dropped); image 0: points 4,4,2,2; image 2: 6,3 (two valid points)
    assert s.kept_images == 2 and s.points == 6
    assert s.total_discrepancy == pytest.approx((4 + 4 + 2 + 2 + 6 + 3) / 6)
    slope0 = (4 - 2) * 0.1 / ((0.4 - 0.1) * 4)
    slope2 = (6 - 3) * 0.2 / ((0.3 - 0.2) * 6)
    assert s.nslope == pytest.approx((slope0 + slope2) / 6)
    assert s.nslope_per_image == pytest.approx((slope0 + slope2) / 2)
    valid_pts = point_valid(torch.tensor([[2.0, 1.0], [0.0, 1.0]]), torch.tensor([[1.0, 1.0], [0.0, 2.0]]),
                            torch.tensor([0, 0]), torch.tensor([1, 1]))
    assert valid_pts.tolist() == [True, False]  # a tie at x' counts as success; clean preferring t does not


# -- AAI (TopKAttack with the seed's options) -------------------------------------------------------------
@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 1000), eps=st.sampled_from([0.0, 0.05, 0.3]))
def test_aai_keeps_budget_and_box(seed, eps) -> None:
    model, (x, y) = tiny_net(seed % 3), tiny_batch(seed=seed)
    torch.manual_seed(seed)
    attack = TopKAttack(CAM(), eps=eps, step_size=0.01, steps=4, k_top=2, eval_k=2, surrogate="none",
                        random_start=True, select="last",
                        postprocess=Postprocess(absolute=False, channels="keep", normalize="none"))
    result = attack.run(model, x, y)
    assert (result.x_adv - x).abs().max() <= eps + TOL
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    with torch.no_grad():
        kept = model(result.x_adv).argmax(1) == model(x).argmax(1)
        assert torch.allclose(result.adv_map, model.cam(result.x_adv)[torch.arange(len(y)), y])
    assert torch.equal(result.extras["label_kept"], kept) and torch.equal(result.success, kept)
    with pytest.raises(ValueError, match="select='last'"):
        TopKAttack(CAM(), random_start=True, select="last", restarts=2)


# -- the protocol ---------------------------------------------------------------------------------------
def test_protocol_images_and_rows_equal_separate_pgd_runs() -> None:
    assert seed_permutation(10000, 200).tolist() == np.random.RandomState(99).permutation(10000)[:200].tolist()
    np.random.seed(99)
    assert seed_permutation(500, 7).tolist() == np.random.permutation(500)[:7].tolist()
    model, (x, y) = tiny_net(side=8), tiny_batch(n=12)
    protocol = BoopathyPGDProtocol(eps=[0.0, 0.1, 0.3], steps=[1, 3, 5], step_size=0.05, batch_size=5)
    acc = protocol.accuracy(model, x, y)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).double().mean()
    for r, steps in enumerate(protocol.steps):
        assert float(acc[r, 0]) == pytest.approx(float(clean))
        for j, eps in enumerate(protocol.eps[1:], start=1):
            x_adv = PGD(eps=eps, step_size=0.05, steps=steps, random_start=False, loss="ce")(model, x, y)
            with torch.no_grad():
                expected = (model(x_adv).argmax(1) == y).double().mean()
            assert float(acc[r, j]) == pytest.approx(float(expected)), (steps, eps)


# -- configs and the callback ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["isa_cam", "isa_gradcam_pp", "isa_ig", "min_eps", "aai_topk_cam",
                                  "aai_topk_gradcam_pp", "aai_topk_ig"])
def test_configs_compose(name: str, tmp_path) -> None:
    cfg = compose_config("eval", ["model=boopathy_small", "data=mnist", f"attack={name}"], tmp_path)
    built = build_everything(cfg)
    (callback,) = built["attack_callbacks"]
    attack = callback.attack
    if name.startswith("aai"):
        assert (attack.k_top, attack.steps, attack.step_size, attack.select, attack.random_start) == (8, 200, 0.01,
                                                                                                      "last", True)
    else:
        assert type(callback).__name__ == "ISAEvaluation"
        assert (attack.kappa, attack.rounds, attack.steps) == (0.1, 10, 10)
        assert attack.mode == ("min_eps" if name == "min_eps" else "isa")


def test_eval_boopathy_composes(tmp_path) -> None:
    cfg = compose_config("eval", ["eval=boopathy", "model=boopathy_small", "data=mnist"], tmp_path)
    assert list(cfg.attack) == ["boopathy_pgd"]
    (callback,) = build_everything(cfg)["attack_callbacks"]
    assert callback.protocol.steps == [1, 10, 100, 200] and callback.protocol.eps == [0, .05, .1, .2, .3, .35, .4]
    cfg = compose_config("eval", ["eval=boopathy", "model=boopathy_small", "data=mnist", "attack=[isa_cam]"], tmp_path)
    assert sorted(cfg.attack) == ["boopathy_pgd", "isa_cam"]
    assert "boopathy_pgd" not in compose_config("eval", ["model=boopathy_small"], tmp_path).attack


def test_callback_logs_the_isa_keys(tmp_path) -> None:
    import lightning as L

    from robustxai.callbacks.isa_eval import ISAEvaluation
    from robustxai.data.base import TensorLoader
    from robustxai.methods.base import EvaluationModule

    model = tiny_net(side=28)
    x, y = tiny_batch(n=6, side=28, seed=5)

    class Data(L.LightningDataModule):
        def test_dataloader(self):
            return TensorLoader(x, y, batch_size=3, shuffle=False, seed=0)

    for mode in ("isa", "min_eps"):
        callback = ISAEvaluation("isa_cam", small_isa(mode=mode, penalties=[1.0, 1.5] if mode == "isa" else []),
                                 output_dir=tmp_path / mode, grid_images=2)
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[callback], inference_mode=False)
        trainer.test(EvaluationModule(model), datamodule=Data(), verbose=False)
        logged = {k for k in trainer.callback_metrics if k.startswith("test/isa/isa_cam/")}
        if mode == "isa":
            expected = {"total_discrepancy", "nslope", "nslope_per_image", "kendall", "pearson", "kept_images",
                        "points", "success", "eps_adv", "images", "curve/eps_adv", "curve/x1", "curve/x1.5",
                        "eps/x1.5", "discrepancy/x1", "raw_discrepancy/eps_adv", "bound_holds"}
            names = {"isa_cam_curve.png", "isa_cam_overlay.png"}
        else:
            expected = {"bound_holds", "bound_min_slack", "margin", "bound_discrepancy", "min_eps", "success"}
            names = {"isa_cam_bound.png", "isa_cam_overlay.png"}
        assert {f"test/isa/isa_cam/{k}" for k in expected} <= logged, sorted(logged)
        assert float(trainer.callback_metrics["test/isa/isa_cam/images"]) == 6
        assert names <= {p.name for p in (tmp_path / mode / "images").iterdir()}


@pytest.mark.slow
def test_eval_isa_cam_on_the_released_int_network_writes_results(tmp_path) -> None:
    """The brief's command end to end on 10 real MNIST images: results.json holds the ISA figures."""
    from conftest import results, run_cli, shared_dataset

    data = shared_dataset("MNIST")
    weights = data.parent / "models" / "boopathy-networks" / "mnist_smallgap_int_100.pkl"
    if not weights.exists():
        pytest.skip(f"{weights} not available")
    run_dir = tmp_path / "run"
    run_cli("eval", "model=boopathy_small", f"model.weights={weights}", "data=mnist", "attack=isa_cam",
            "data.test_subset=10", "attack.isa_cam.rounds=4", f"hydra.run.dir={run_dir}",
            env={"DATA_DIR": str(data), "OMP_NUM_THREADS": "1"})
    metrics = results(run_dir)
    for key in ("total_discrepancy", "nslope", "kendall", "pearson", "curve/eps_adv", "curve/x3", "success",
                "eps_adv", "bound_holds"):
        assert f"test/isa/isa_cam/{key}" in metrics, key
    assert metrics["test/isa/isa_cam/images"] == 10
    assert metrics["test/isa/isa_cam/bound_holds"] in (1.0, None)  # None: no successful image to check
    assert (run_dir / "images" / "isa_cam_curve.png").exists() and (run_dir / "images" / "isa_cam_overlay.png").exists()
