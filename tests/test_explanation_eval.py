"""The evaluation callback of the attacks on explanations: metrics over correctly classified images, end to end."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from robustxai.attacks.explanation import TopKAttack
from robustxai.attributions.integrated_gradients import IntegratedGradients
from robustxai.callbacks.explanation_eval import ExplanationAttackEvaluation
from robustxai.data.digits import DigitsDataModule
from robustxai.methods.base import EvaluationModule
from robustxai.metrics import functional as MF
from robustxai.models.small_cnn import SmallCNN
from tests.conftest import TinyConvNet, results, run_cli

SIDE = 12


class FlipWhenMoved(nn.Module):
    """Adds a large logit to another class for any input that is not one of the clean images (no gradient)."""

    def __init__(self, base: nn.Module, clean: Tensor) -> None:
        super().__init__()
        self.base = base
        self.register_buffer("clean", clean.flatten(1).clone())

    def forward(self, x: Tensor) -> Tensor:
        logits = self.base(x)
        with torch.no_grad():
            moved = torch.cdist(x.flatten(1), self.clean).min(dim=1).values > 0
            other = (self.base(x).argmax(dim=1) + 1) % logits.shape[1]
            bonus = 1e4 * nn.functional.one_hot(other, logits.shape[1]).to(logits.dtype) * moved[:, None]
        return logits + bonus


def attack() -> TopKAttack:
    return TopKAttack(IntegratedGradients(steps=4), eps=0.1, step_size=0.03, steps=3, k_top=20, eval_k=10)


def test_metrics(model: nn.Module, x: Tensor, y: Tensor, tmp_path, batch_size: int = 7) -> tuple[dict, ExplanationAttackEvaluation]:
    callback = ExplanationAttackEvaluation("topk", attack(), output_dir=tmp_path, grid_images=4)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        inference_mode=False, callbacks=[callback])
    trainer.test(EvaluationModule(model), dataloaders=DataLoader(TensorDataset(x, y), batch_size=batch_size),
                 verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}, callback


test_metrics.__test__ = False  # a helper, not a test


def data(seed: int = 0, n: int = 20) -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(seed)
    model = TinyConvNet(side=SIDE).eval()
    x = torch.rand(n, 1, SIDE, SIDE)
    y = model(x).argmax(dim=1)
    y[::3] = (y[::3] + 1) % 10  # every third image is misclassified
    return model, x, y


def test_metrics_are_means_over_correctly_classified_images_only(tmp_path):
    model, x, y = data()
    metrics, callback = test_metrics(model, x, y, tmp_path)
    correct = model(x).argmax(dim=1) == y
    expected = attack().run(model, x[correct], y[correct])  # deterministic: the same result as in the callback
    a, b = expected.clean_map, expected.adv_map
    assert metrics["test/explanation_attack_images/topk"] == int(correct.sum())
    assert metrics["test/topk_intersection/topk"] == pytest.approx(float(MF.topk_intersection(a, b, 10).mean()), abs=1e-6)
    assert metrics["test/kendall/topk"] == pytest.approx(float(MF.kendall_tau(a, b).mean()), abs=1e-6)
    assert metrics["test/spearman/topk"] == pytest.approx(float(MF.spearman(a, b).mean()), abs=1e-6)
    assert metrics["test/mass_center_shift/topk"] == pytest.approx(float(MF.mass_center_shift(a, b).mean()), abs=1e-5)
    assert metrics["test/explanation_attack_unchanged/topk"] == pytest.approx(float(expected.unchanged.float().mean()))
    assert metrics["test/kendall/topk"] < 1.0 and metrics["test/acc"] == pytest.approx(float(correct.float().mean()))
    assert callback.grid_path == tmp_path / "images" / "topk.png" and callback.grid_path.stat().st_size > 0


def test_images_where_every_step_flips_the_label_report_the_clean_map(tmp_path):
    model, x, y = data(1)
    flips = FlipWhenMoved(model, x).eval()
    metrics, _ = test_metrics(flips, x, y, tmp_path)
    assert metrics["test/explanation_attack_unchanged/topk"] == 1.0
    assert metrics["test/topk_intersection/topk"] == 1.0 and metrics["test/kendall/topk"] == 1.0
    assert metrics["test/mass_center_shift/topk"] == 0.0


def digits_checkpoint(path) -> str:
    """A SmallCNN fitted to the digits training split in 60 Adam steps, saved as a Lightning-style checkpoint."""
    x, y = DigitsDataModule(val_size=0).load(train=True)
    x = x.float() / 255 if x.dtype == torch.uint8 else x
    torch.manual_seed(0)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        idx = torch.randint(0, len(x), (128,))
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return str(path)


TINY_TOPK = ["attack.topk.steps=2", "attack.topk.attribution.steps=4", "trainer.accelerator=cpu"]


def test_eval_cli_reports_na_aa_in_co(tmp_path):
    """A small digits checkpoint evaluated with ``attack=[pgd,topk]`` through src/eval.py."""
    ckpt = digits_checkpoint(tmp_path / "model.ckpt")
    run_dir = tmp_path / "eval"
    run_cli("eval", "data=digits", "model=small_cnn", f"ckpt_path={ckpt}", "attack=[pgd,topk]", "data.test_subset=24",
            "attack.pgd.steps=2", *TINY_TOPK, f"hydra.run.dir={run_dir}")
    metrics = results(run_dir)
    for key in ("test/acc", "test/robust_acc/pgd", "test/topk_intersection/topk", "test/kendall/topk",
                "test/spearman/topk", "test/mass_center_shift/topk", "test/explanation_attack_unchanged/topk"):
        assert key in metrics and metrics[key] is not None and math.isfinite(metrics[key]), key
    assert metrics["test/acc"] > 0.5
    assert metrics["test/explanation_attack_images/topk"] == round(metrics["test/acc"] * 24)
    assert 0.0 <= metrics["test/topk_intersection/topk"] <= 1.0 and -1.0 <= metrics["test/kendall/topk"] < 1.0
    assert (run_dir / "images" / "topk.png").exists()


@pytest.mark.slow
def test_ddp_eval_gives_the_single_process_numbers(tmp_path):
    """2 CPU processes (gloo) shard 21 test images; the synced means equal the single-process ones."""
    ckpt = digits_checkpoint(tmp_path / "model.ckpt")
    common = ["data=digits", "model=small_cnn", f"ckpt_path={ckpt}", "attack=[topk]", "data.test_subset=21", *TINY_TOPK]
    run_cli("eval", *common, f"hydra.run.dir={tmp_path / 'one'}")
    run_cli("eval", *common, "trainer=ddp_cpu", f"hydra.run.dir={tmp_path / 'two'}", env={"HYDRA_FULL_ERROR": "1"})
    one, two = results(tmp_path / "one"), results(tmp_path / "two")
    keys = [k for k in one if k.endswith("/topk")]
    assert len(keys) >= 6 and two["test/explanation_attack_images/topk"] == one["test/explanation_attack_images/topk"]
    for key in keys:
        assert two[key] == pytest.approx(one[key], abs=1e-6), key
