"""ARA search throughput (images/s): ours (WoodsAttack, both ARA kinds) vs a bare forward+backward loop.

The limit does the same number of ResNet-44 forward+backward passes w.r.t. the input (steps + 1 per
kind) and nothing else. No peer library implements this search; the seed's own loop is the reference
semantics (tests/test_woods_attack.py), not a timing oracle.
Usage: .venv/bin/python bench/bench_ara.py [--quick] [--batch 32] [--steps 450] [--synthetic]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    REPO_ROOT,
    apply_threads,
    base_parser,
    data_dir,
    print_table,
    ratio_line,
    time_interleaved,
)

from robustxai.data.cifar10 import load_cifar10
from robustxai.attacks.minimal_radius import make_ara_attack, minimal_radii, seed_subset
from robustxai.metrics.ara import ara
from robustxai.models.woods_resnet import WoodsResNet

PREBUILT = REPO_ROOT.parent / "shared" / "models" / "woods-prebuilt" / "resnet44-robust.pt"


def load_model_and_inputs(batch: int, synthetic: bool) -> tuple[nn.Module, Tensor, Tensor, str]:
    """The robust prebuilt net (or a random-init one) and the first ``batch`` images of the seed's ARA set."""
    model = WoodsResNet(weights=str(PREBUILT)) if PREBUILT.is_file() else WoodsResNet("half_huber")
    source = "resnet44-robust.pt" if PREBUILT.is_file() else "random-init ResNet-44 (prebuilt file missing)"
    if synthetic:
        g = torch.Generator().manual_seed(0)
        return model.eval(), torch.rand(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g), source
    images, labels = load_cifar10(data_dir(), train=False, download=False, cache_dir=None)
    index = seed_subset(len(labels), batch)
    return model.eval(), images[index].float() / 255, labels[index], source


def limit_loop(model: nn.Module, x: Tensor, y: Tensor, passes: int) -> Callable[[], None]:
    """The plain-PyTorch limit: ``passes`` forward+backward passes w.r.t. the input, nothing else."""
    def run() -> None:
        for p in model.parameters():
            p.requires_grad_(False)
        for _ in range(passes):
            x_in = x.detach().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(x_in), y, reduction="sum"), x_in)
        for p in model.parameters():
            p.requires_grad_(True)
    return run


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Time both ARA searches against the limit; return images/s and the ratio."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=450)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--synthetic", action="store_true", help="uniform-noise inputs instead of CIFAR-10")
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    batch, steps, repeats = args.batch, args.steps, args.repeats
    eps, momentum = 20.0 * steps / 450, 0.9
    if args.quick:
        batch, steps = min(batch, 8), min(steps, 20)
        eps, momentum = 0.05 * steps, 0.0  # the seed's advice for < 100 steps
    model, x, y, source = load_model_and_inputs(batch, args.synthetic)
    attacks = {kind: make_ara_attack(kind, eps, steps, momentum, sanity_check="off") for kind in ("attack", "btr")}
    radii: dict[str, Tensor] = {}

    def ours() -> None:
        for kind, attack in attacks.items():
            radii[kind] = minimal_radii(model, x, y, attack, batch_size=batch)

    print(f"\n== bench_ara: {source}, {'synthetic' if args.synthetic else 'CIFAR-10 seed-1776'} inputs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    timings = time_interleaved({"ours (WoodsAttack, attack + btr)": ours,
                                "limit (bare fwd+bwd loop)": limit_loop(model, x, y, 2 * (steps + 1))},
                               warmup=0, repeats=repeats)
    rows = [[name, t.median, batch / t.median, 2 * (steps + 1)] for name, t in timings.items()]
    print_table(f"ARA search, batch {batch}, {steps} steps (+1 evaluation pass) x 2 kinds, eps={eps:g}, "
                f"momentum={momentum}; median of {repeats}", ["variant", "median s", "images/s", "fwd+bwd"], rows)
    t_ours, t_lim = (t.median for t in timings.values())
    print(ratio_line("ours / limit (throughput)", t_lim / t_ours))
    values = {kind: float(ara(r, 10)) for kind, r in radii.items()}
    print(f"ARA on these {batch} images (sanity check off): attack {values['attack']:.4f}, btr {values['btr']:.4f}")
    return {"ours_ips": batch / t_ours, "limit_ips": batch / t_lim, "ours_vs_limit": t_lim / t_ours,
            "ara_attack": values["attack"], "ara_btr": values["btr"]}


if __name__ == "__main__":
    main()
