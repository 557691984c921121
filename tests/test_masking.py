"""Square attack (budget, box, queries, torchattacks) and the gradient-masking checks (masked models flagged)."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from robustxai.analysis.masking import (FLAG, PASS, SKIP, MaskingSettings, check_gradient_free, check_large_eps,
                                        check_monotone_eps, check_more_steps, check_transfer, run_checks, summarise)
from robustxai.attacks.pgd import PGD
from robustxai.attacks.square import Square
from robustxai.attacks.square import patch_fraction
from robustxai.callbacks.masking_check import MaskingCheck, build_masking_checks, masking_results
from robustxai.data.digits import digits_as_mnist
from tests.conftest import ROOT, TinyConvNet


class Quantise(nn.Module):
    """``x -> round(x * 255) / 255``: the forward pass is (almost) the identity, the gradient is exactly 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 255) / 255


class Saturate(nn.Module):
    """Log-softmax of logits times 10^4: cross-entropy saturates, so its gradient underflows to 0."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(z * 1e4, dim=1)


def _digits(side: int = 14) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = digits_as_mnist()
    x = F.adaptive_avg_pool2d(x, side)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def _train_linear(x: torch.Tensor, y: torch.Tensor, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def digits_models() -> dict[str, object]:
    xtr, ytr, xte, yte = _digits()
    model = _train_linear(xtr, ytr, seed=0)
    return {"model": model, "other": _train_linear(xtr, ytr, seed=1), "x": xte[:64], "y": yte[:64]}


ATTACK = PGD(eps=0.05, step_size=0.005, steps=20, random_start=True, track_best=True)
SETTINGS = MaskingSettings(n_images=64, square_queries=300)


# -- Square -------------------------------------------------------------------------------------

@settings(max_examples=20, deadline=None)
@given(eps=st.floats(0.0, 1.0), queries=st.integers(1, 30), batch_size=st.integers(1, 5),
       channels=st.sampled_from([1, 3]), side=st.sampled_from([4, 8]), seed=st.integers(0, 2**16))
def test_square_stays_in_budget_and_box(eps, queries, batch_size, channels, side, seed):
    torch.manual_seed(seed)
    model = TinyConvNet(in_channels=channels, side=side).eval()
    x = torch.rand(batch_size, channels, side, side)
    y = torch.randint(0, 10, (batch_size,))
    x_adv = Square(eps=eps, n_queries=queries)(model, x, y)
    assert x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_square_queries_each_image_at_most_n_queries_times(tiny_model, batch):
    x, y = batch
    seen = torch.zeros(())

    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = tiny_model

        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            nonlocal seen
            seen = seen + len(inp)
            return self.inner(inp)

    Square(eps=0.05, n_queries=40)(Counting(), x, y)
    assert 2 * len(y) <= seen <= (40 + 1) * len(y)  # the clean check, then at most n_queries per image


def test_square_leaves_misclassified_images_alone_and_never_worsens_the_margin(digits_models):
    model, x, y = digits_models["model"], digits_models["x"], digits_models["y"]
    wrong = (y + 1) % 10  # every image is "misclassified" with respect to these labels
    wrong[model(x).argmax(1) == wrong] = (wrong[model(x).argmax(1) == wrong] + 1) % 10
    assert torch.equal(Square(eps=0.1, n_queries=20)(model, x, wrong), x)
    x_adv = Square(eps=0.05, n_queries=50)(model, x, y)
    with torch.no_grad():
        margin = lambda inp: (model(inp).gather(1, y[:, None]).squeeze(1)  # noqa: E731
                              - model(inp).scatter(1, y[:, None], -1e9).amax(1))
        assert torch.all(margin(x_adv) <= margin(x) + 1e-6)


def test_patch_schedule_is_the_papers_halving_schedule():
    assert patch_fraction(0, 10000, 0.8) == 0.8
    assert patch_fraction(11, 10000, 0.8) == 0.4
    assert patch_fraction(300, 10000, 0.8) == 0.1
    assert patch_fraction(9000, 10000, 0.8) == 0.8 / 512
    assert patch_fraction(100, 1000, 0.8) == patch_fraction(1000, 10000, 0.8) == 0.05  # rescaled to the budget


def test_square_success_rate_matches_torchattacks(digits_models):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = digits_models["model"], digits_models["x"], digits_models["y"]
    ours = Square(eps=0.05, n_queries=200)(model, x, y)
    theirs = torchattacks.Square(model, norm="Linf", eps=0.05, n_queries=200, seed=0)(x, y)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean()
        acc_ours = (model(ours).argmax(1) == y).float().mean()
        acc_theirs = (model(theirs).argmax(1) == y).float().mean()
    assert clean - acc_ours > 0.3  # the attack does work on this model
    assert abs(float(acc_ours - acc_theirs)) <= 0.1, (float(acc_ours), float(acc_theirs))


def test_square_refuses_bad_values():
    with pytest.raises(ValueError, match="norm"):
        Square(norm="l2")
    with pytest.raises(ValueError, match="n_queries"):
        Square(n_queries=0)


# -- the decisions ------------------------------------------------------------------------------

def test_decisions_on_hand_made_numbers():
    assert check_large_eps(1.0, 0.0).status == PASS
    assert check_large_eps(1.0, 0.3, max_acc=0.1).status == FLAG
    assert check_monotone_eps([0.1, 0.2, 0.4], [0.5, 0.3, 0.0]).status == PASS
    rising = check_monotone_eps([0.4, 0.1, 0.2], [0.6, 0.5, 0.3], tolerance=0.05)
    assert rising.status == FLAG and "eps=0.2 to eps=0.4" in rising.explanation
    assert rising.measured["eps"] == [0.1, 0.2, 0.4]
    assert check_gradient_free(0.5, 0.48, tolerance=0.05).status == PASS
    assert check_gradient_free(0.5, 0.2).status == FLAG
    assert check_gradient_free(0.5, None, reason="L2").status == SKIP
    assert check_transfer(0.5, None, reason="no surrogate").explanation == "no surrogate"
    assert check_transfer(0.5, 0.1).status == FLAG
    assert check_more_steps([20, 100], [0.3, 0.2]).status == PASS
    assert check_more_steps([20, 100], [0.3, 0.5]).status == FLAG
    record = summarise([check_large_eps(1.0, 0.3), check_more_steps([1, 2], [0.1, 0.1])], n_images=5)
    assert record["status"] == FLAG and record["flagged"] == ["large_eps"] and record["n_images"] == 5
    assert set(record["checks"]["large_eps"]) == {"name", "status", "measured", "explanation"}
    json.dumps(record)  # goes into results.json as it is


def test_settings_refuse_bad_values():
    with pytest.raises(ValueError, match="n_images"):
        MaskingSettings(n_images=0)
    with pytest.raises(ValueError, match="eps_multiples"):
        MaskingSettings(eps_multiples=[1.0])


# -- the checks on real models ------------------------------------------------------------------

def test_a_normal_model_is_not_flagged(digits_models):
    record = run_checks(digits_models["model"], ATTACK, digits_models["x"], digits_models["y"], SETTINGS,
                        surrogate=digits_models["other"], progress=False)
    assert record["status"] == PASS, record
    assert record["checks"]["transfer"]["status"] == PASS
    assert record["checks"]["large_eps"]["measured"]["robust_acc"] <= 0.1
    assert record["clean_acc"] > 0.85


@pytest.mark.parametrize("kind", ["quantise", "saturate"])
def test_a_model_with_masked_gradients_is_flagged(digits_models, kind):
    inner = digits_models["model"]
    masked = nn.Sequential(Quantise(), inner) if kind == "quantise" else nn.Sequential(inner, Saturate())
    x, y = digits_models["x"], digits_models["y"]
    x_probe = x[:8].clone().requires_grad_(True)
    F.cross_entropy(masked(x_probe), y[:8]).backward()
    assert x_probe.grad.abs().max() == 0  # the premise: PGD gets no signal at all
    record = run_checks(masked, ATTACK, x, y, SETTINGS, surrogate=inner, progress=False)
    assert record["status"] == FLAG
    assert {"gradient_free", "transfer"} <= set(record["flagged"]), record["flagged"]
    free = record["checks"]["gradient_free"]["measured"]
    assert free["square_acc"] < free["pgd_acc"] - 0.3


def test_l2_attacks_skip_the_square_check_with_a_reason(digits_models):
    attack = PGD(norm="l2", eps=0.5, step_size=0.05, steps=10)
    record = run_checks(digits_models["model"], attack, digits_models["x"], digits_models["y"],
                        MaskingSettings(n_images=16), progress=False)
    check = record["checks"]["gradient_free"]
    assert check["status"] == SKIP and "L-inf only" in check["explanation"]
    assert record["checks"]["transfer"]["status"] == SKIP and "surrogate_ckpt" in record["checks"]["transfer"]["explanation"]


# -- the callback in a Lightning test loop, and its config ---------------------------------------

def test_callback_in_a_test_loop_writes_its_record(digits_models, tmp_path):
    from robustxai.methods.base import EvaluationModule

    masked = nn.Sequential(Quantise(), digits_models["model"])
    loader = DataLoader(TensorDataset(digits_models["x"], digits_models["y"]), batch_size=20)
    check = MaskingCheck("pgd", ATTACK, MaskingSettings(n_images=30, square_queries=200), output_dir=tmp_path)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        inference_mode=False, callbacks=[check])
    trainer.test(EvaluationModule(masked), loader, verbose=False)
    assert check.results is not None and check.results["n_images"] == 30  # only the first 30 images
    assert "gradient_free" in check.results["flagged"]
    on_disk = json.loads((tmp_path / "masking_pgd.json").read_text())
    assert on_disk == json.loads(json.dumps(check.results))
    assert masking_results([check]) == {"pgd": check.results}


def test_config_switch_builds_one_check_per_pgd_attack(tmp_path):
    from robustxai.callbacks import AttackEvaluation

    settings_node = OmegaConf.load(ROOT / "conf" / "masking" / "default.yaml")
    pgd_cb = AttackEvaluation("pgd", ATTACK)
    square_cb = AttackEvaluation("square", Square(eps=0.1))
    cfg = OmegaConf.create({"masking_checks": True, "masking": settings_node})
    built = build_masking_checks(cfg, [pgd_cb, square_cb], tmp_path, make_model=lambda: None)
    assert [cb.name for cb in built] == ["pgd"] and built[0].settings.n_images == settings_node.n_images
    cfg.masking_checks = False
    assert build_masking_checks(cfg, [pgd_cb], tmp_path, make_model=lambda: None) == []


# -- AutoAttack (Croce & Hein's package behind our contract) --------------------------------------

@pytest.mark.parametrize("version", ["custom", pytest.param("standard", marks=pytest.mark.slow)])
def test_autoattack_is_at_least_as_strong_as_pgd_and_keeps_budget_and_box(digits_models, version):
    pytest.importorskip("pyautoattack", reason="AutoAttack's package is not installed: pip install pyautoattack")
    from robustxai.attacks.autoattack import AutoAttack

    model, x, y = digits_models["model"], digits_models["x"][:32], digits_models["y"][:32]
    attacks = ["apgd-ce", "apgd-t"] if version == "custom" else None  # the fast suite: APGD only
    x_aa = AutoAttack(eps=0.05, version=version, attacks=attacks)(model, x, y)
    x_pgd = PGD(eps=0.05, step_size=0.005, steps=20, random_start=False)(model, x, y)
    assert (x_aa - x).abs().max() <= 0.05 + 1e-6 and x_aa.min() >= 0 and x_aa.max() <= 1
    with torch.no_grad():
        acc_aa = (model(x_aa).argmax(1) == y).float().mean()
        acc_pgd = (model(x_pgd).argmax(1) == y).float().mean()
        clean = (model(x).argmax(1) == y).float().mean()
    assert acc_aa <= acc_pgd + 1e-6 and acc_aa < clean - 0.3, (float(clean), float(acc_pgd), float(acc_aa))


def test_autoattack_without_its_package_names_the_install_command(monkeypatch):
    import sys

    from robustxai.attacks.autoattack import AutoAttack

    monkeypatch.setitem(sys.modules, "autoattack", None)  # a None entry makes `import` fail
    monkeypatch.setitem(sys.modules, "pyautoattack", None)
    attack = AutoAttack(eps=0.1)  # built without the package, so configs compose everywhere
    with pytest.raises(ImportError, match="pip install pyautoattack"):
        attack(nn.Sequential(nn.Flatten(), nn.Linear(4, 10)), torch.rand(2, 1, 2, 2), torch.tensor([0, 1]))


def test_autoattack_refuses_bad_values():
    from robustxai.attacks.autoattack import AutoAttack

    with pytest.raises(ValueError, match="norm"):
        AutoAttack(norm="l3")
    with pytest.raises(ValueError, match="custom"):
        AutoAttack(attacks=["apgd-ce"])
    with pytest.raises(ValueError, match="box"):
        AutoAttack(box=(-1.0, 1.0))


def test_surrogate_checkpoint_is_loaded_into_a_fresh_copy_for_the_transfer_check(digits_models, tmp_path):
    from robustxai.callbacks import AttackEvaluation

    other = digits_models["other"]
    torch.save({"state_dict": {f"model.{k}": v for k, v in other.state_dict().items()}}, tmp_path / "s.ckpt")
    node = OmegaConf.load(ROOT / "conf" / "masking" / "default.yaml")
    node.surrogate_ckpt = str(tmp_path / "s.ckpt")
    cfg = OmegaConf.create({"masking_checks": True, "masking": node})
    fresh = lambda: nn.Sequential(nn.Flatten(), nn.Linear(196, 10))  # noqa: E731
    (check,) = build_masking_checks(cfg, [AttackEvaluation("pgd", ATTACK)], tmp_path, make_model=fresh)
    x = digits_models["x"]
    torch.testing.assert_close(check.surrogate(x), other(x))
