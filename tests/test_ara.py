"""ARA (Woods et al. spec 3): the seed's histogram area, the seed-1776 image set, radii, metric, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robustxai.attacks.minimal_radius import make_ara_attack, minimal_radii, seed_subset
from robustxai.callbacks.registry import evaluation_callback
from robustxai.metrics.ara import AccuracyRobustnessArea, accuracy_at, ara
from tests.conftest import ROOT, run_cli, shared_dataset

PREBUILT = ROOT.parent / "shared" / "models" / "woods-prebuilt"


def exact_area(radii: np.ndarray, num_classes: int) -> float:
    """Independent oracle: the exact integral of max(0, A(r) - 1/C) for the step function A(r) = P(r_i > r)."""
    r = np.sort(radii[np.isfinite(radii)])
    n = len(radii)
    area, prev = 0.0, 0.0
    for k, value in enumerate(r):           # on [prev, value) exactly n - k images are still robust
        area += (value - prev) * max(0.0, (n - k) / n - 1.0 / num_classes)
        prev = value
    return area


def test_hand_computed_example() -> None:
    # R = 1, 4 bins of 0.25: cumulative fractions .25 .5 .75 1 -> (0.65 + 0.4 + 0.15 + 0) * 0.25 = 0.3
    value = ara(torch.tensor([0.0, 0.25, 0.5, 1.0]), num_classes=10, bins=4)
    assert value.item() == pytest.approx(0.3, abs=1e-7)


def test_right_endpoint_sum_is_slightly_below_the_exact_area() -> None:
    radii = torch.linspace(0, 0.05, 100_001)
    value = ara(radii, 10).item()
    exact = exact_area(radii.double().numpy(), 10)
    assert exact == pytest.approx(0.02025, rel=1e-4)
    assert value == pytest.approx(0.020227, abs=2e-6)  # the seed's sum (spec 3)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        r = torch.rand(300, generator=g) * 0.03
        r[:40] = 0
        value, exact = ara(r, 10).item(), exact_area(r.double().numpy(), 10)
        assert exact - float(r.max()) / 1000 - 1e-7 <= value <= exact + 1e-7


def test_edge_cases_and_infinite_radii() -> None:
    assert ara(torch.zeros(5), 10).item() == 0.0
    with_inf = ara(torch.tensor([0.1, 0.2, float("inf")]), 10, bins=2).item()
    # R = 0.2: bins [0, .1) [.1, .2] hold 0 and 2 (inf never counted), F = 0, 2/3 -> 0.1 * (0.9 + (1/3 - .1))
    assert with_inf == pytest.approx(0.1 * (0.9 + 1 / 3 - 0.1), rel=1e-6)
    for bad in (torch.tensor([-0.1, 0.2]), torch.tensor([float("nan")]), torch.zeros(0)):
        with pytest.raises(ValueError):
            ara(bad, 10)
    assert torch.equal(accuracy_at(torch.tensor([0.0, 0.1, 0.3]), torch.tensor([0.0, 0.2])), torch.tensor([2 / 3, 1 / 3]))


def test_metric_gathers_updates_and_matches_the_functional() -> None:
    r = torch.rand(50, generator=torch.Generator().manual_seed(2))
    metric = AccuracyRobustnessArea(num_classes=10)
    metric.update(r[:20])
    metric.update(r[20:])
    assert metric.compute().item() == pytest.approx(ara(r, 10).item(), rel=1e-6)
    assert torch.equal(metric.all_radii(), r)


def test_seed_subset_reproduces_the_seeds_permutation() -> None:
    state = torch.get_rng_state()
    index = seed_subset(10_000, 1000)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    assert index[:20].tolist() == [206, 3055, 6922, 5766, 8892, 7078, 9350, 6912, 1807, 4344, 8234, 3452,
                                   7758, 7582, 8239, 2669, 3288, 7692, 3430, 2029]
    assert int(index.sum()) == 4_992_859
    with pytest.raises(ValueError):
        seed_subset(10, 11)


def test_minimal_radii_zero_for_failing_and_smallest_found_otherwise() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 10)).eval()
    x = torch.rand(12, 3, 4, 4)
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.clone()
    y[:3] = (pred[:3] + 1) % 10  # already misclassified -> radius 0
    attack = make_ara_attack("attack", eps=2.0, steps=60, momentum=0.0, sanity_check="off")
    radii = minimal_radii(model, x, y, attack, batch_size=5)
    assert bool((radii[:3] == 0).all()) and bool((radii[3:] > 0).all()) and bool(radii.isfinite().all())
    with torch.no_grad():  # the returned point at radius r is misclassified
        x_adv = attack(model, x, y)
        assert bool((model(x_adv).argmax(1) != y).all())
    btr = minimal_radii(model, x, y, make_ara_attack("btr", 2.0, 60, 0.0, "off"), batch_size=12)
    assert bool((btr[3:] >= radii[3:] * 0.9).all())  # p_y <= 1/C lies beyond the decision boundary
    never = minimal_radii(model, x[3:5], y[3:5], make_ara_attack("attack", 1e-6, 4, 0.0, "off"))
    assert bool(never.isinf().all())
    with pytest.raises(ValueError, match="kind"):
        make_ara_attack("linf")


def _exact_images() -> tuple[torch.Tensor, torch.Tensor]:
    """Test images 0, 2, 5, 8, 9 from the seed's lossless PNGs (spec 6.2)."""
    from PIL import Image

    out = PREBUILT / "example_output"
    if not out.is_dir():
        pytest.skip("seed example PNGs not available")
    files = ["_input.png"] + [f"prebuilt_orig_{j}.png" for j in range(4)]
    x = torch.stack([torch.from_numpy(np.array(Image.open(out / f).convert("RGB"))).permute(2, 0, 1) for f in files])
    return x.float() / 255, torch.tensor([3, 8, 6, 3, 1])


@pytest.mark.slow
def test_btr_radii_of_the_robust_net_match_the_spec_table() -> None:
    """Spec 3 lists per-image r_i for test 0, 2, 5, 8, 9 (float noise ~1-10 %): robust net, BTR."""
    from robustxai.models.woods_resnet import woods_resnet_from_file

    x, y = _exact_images()
    model = woods_resnet_from_file(PREBUILT / "resnet44-robust.pt")
    radii = minimal_radii(model, x, y, make_ara_attack("btr"))
    assert radii.tolist() == pytest.approx([0.0442, 0.0552, 0.0596, 0.0631, 0.0388], rel=0.1, abs=5e-4)


@pytest.mark.slow
def test_eval_cli_logs_ara(tmp_path: Path) -> None:
    data = shared_dataset("cifar-10-batches-py")
    run_cli("eval", "model=woods_resnet44", f"model.weights={PREBUILT / 'resnet44-robust.pt'}", "data=cifar10",
            "attack=ara", "attack.ara.n_images=3", "attack.ara.steps=30", "attack.ara.eps=1.5",
            "attack.ara.momentum=0", "+trainer.limit_test_batches=1", f"hydra.run.dir={tmp_path}",
            env={"DATA_DIR": str(data), "OMP_NUM_THREADS": "1"})
    metrics = json.loads((tmp_path / "results.json").read_text())
    assert 0 < metrics["metrics"]["test/ara/ara_btr"] and "test/ara/ara" in metrics["metrics"]
    record = json.loads((tmp_path / "ara_ara.json").read_text())
    assert record["test_index_rank0"] == [206, 3055, 6922]
    assert Path(metrics["images"]["ara"]).is_file()


def test_ara_callback_in_a_test_loop_logs_the_functional_value(tmp_path: Path) -> None:
    import lightning as L

    from robustxai.callbacks.ara_eval import ARA
    from robustxai.data.base import TensorDataModule
    from robustxai.methods.base import EvaluationModule

    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(40, 3, 4, 4, generator=g), torch.randint(0, 10, (40,), generator=g)

    class Tiny(TensorDataModule):
        num_classes, input_shape = 10, (3, 4, 4)

        def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
            return images, labels

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 10))
    config = ARA(eps=2.0, steps=30, momentum=0.0, n_images=7, batch_size=3, sanity_check="off")
    callback = evaluation_callback("ara", config, output_dir=tmp_path)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        inference_mode=False, callbacks=[callback])
    trainer.test(EvaluationModule(model), datamodule=Tiny(batch_size=20), verbose=False)
    index = seed_subset(40, 7)
    for kind, key in (("attack", "test/ara/ara"), ("btr", "test/ara/ara_btr")):
        radii = minimal_radii(model.eval(), images[index], labels[index], make_ara_attack(kind, 2.0, 30, 0.0, "off"),
                             batch_size=3)
        assert float(trainer.callback_metrics[key]) == pytest.approx(ara(radii, 10).item(), rel=1e-6)
    record = json.loads((tmp_path / "ara_ara.json").read_text())
    assert record["test_index_rank0"] == index.tolist()
    assert callback.grid_path is not None and callback.grid_path.is_file()
