"""PGD throughput (images/s): ours vs torchattacks vs a bare forward+backward loop, L-inf and L2.

Usage: .venv/bin/python bench/bench_pgd.py [--quick] [--synthetic] [--batch 256] [--steps 40]
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
import torchattacks
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (CACHE_DIR, apply_threads, base_parser, data_dir, print_table,  # noqa: E402
                    ratio_line, time_interleaved)

from robustxai.attacks import PGD  # noqa: E402
from robustxai.data.mnist import MNISTDataModule  # noqa: E402
from robustxai.models import MadryCNN  # noqa: E402

# threat models: (our norm, torchattacks class, eps, step size)
SETTINGS = {
    "linf": ("linf", torchattacks.PGD, 0.3, 0.01),
    "l2": ("l2", torchattacks.PGDL2, 2.0, 0.1),
}


def load_inputs(batch: int, synthetic: bool, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The first ``batch`` MNIST test images in [0, 1] and their labels (uniform noise if synthetic)."""
    if synthetic:
        g = torch.Generator().manual_seed(seed)
        return torch.rand(batch, 1, 28, 28, generator=g), torch.randint(0, 10, (batch,), generator=g)
    dm = MNISTDataModule(data_dir=data_dir(), batch_size=batch, test_subset=batch, download=False,
                         cache_dir=CACHE_DIR)
    dm.setup("test")
    images, labels = dm.splits["test"]
    return images.float().div(255.0), labels


def input_grad_loop(model: nn.Module, x: Tensor, y: Tensor, steps: int) -> Callable[[], None]:
    """The plain-PyTorch limit: ``steps`` forward+backward passes w.r.t. the input, nothing else."""
    def run() -> None:
        for p in model.parameters():
            p.requires_grad_(False)
        for _ in range(steps):
            x_in = x.detach().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(x_in), y), x_in)
        for p in model.parameters():
            p.requires_grad_(True)
    return run


def float64_diff(norm: str, model: nn.Module, x: Tensor, y: Tensor, steps: int) -> float:
    """Max |ours - torchattacks| in float64, where rounding is not amplified over the steps."""
    our_norm, ta_cls, eps, step = SETTINGS[norm]
    model64, x64 = copy.deepcopy(model).double(), x.double()
    ours = PGD(norm=our_norm, eps=eps, step_size=step, steps=steps, random_start=False)(model64, x64, y)
    theirs = ta_cls(model64, eps=eps, alpha=step, steps=steps, random_start=False)(x64, y)
    return (ours - theirs).abs().max().item()


def bench_norm(norm: str, model: nn.Module, x: Tensor, y: Tensor, steps: int,
               repeats: int) -> dict[str, float]:
    """Time ours, torchattacks and the limit on one threat model; print the table and ratios."""
    our_norm, ta_cls, eps, step = SETTINGS[norm]
    ours = PGD(norm=our_norm, eps=eps, step_size=step, steps=steps, random_start=False)
    theirs = ta_cls(model, eps=eps, alpha=step, steps=steps, random_start=False)
    x_adv: dict[str, Tensor] = {}  # the last timed outputs, compared below

    def run_ours() -> None:
        x_adv["ours"] = ours(model, x, y)

    def run_theirs() -> None:
        x_adv["torchattacks"] = theirs(x, y)

    input_grad_loop(model, x, y, 2)()  # warm-up: the same kernels at the same shapes as all three
    timings = time_interleaved({
        "ours (robustxai.attacks.PGD)": run_ours,
        f"torchattacks.{ta_cls.__name__}": run_theirs,
        "limit (bare fwd+bwd loop)": input_grad_loop(model, x, y, steps),
    }, warmup=0, repeats=repeats)
    diff = (x_adv["ours"] - x_adv["torchattacks"]).abs().max().item()

    n = len(x)
    rows = [[name, t.median, n / t.median, min(t.times), max(t.times)] for name, t in timings.items()]
    print_table(f"PGD {norm} (MadryCNN, eval), batch {n}, {steps} steps, eps={eps}, step={step}; "
                f"median of {repeats}", ["variant", "median s", "images/s", "min s", "max s"], rows)
    t_ours, t_ta, t_lim = (t.median for t in timings.values())
    print(ratio_line("ours / torchattacks (throughput)", t_ta / t_ours, target=1.0))
    print(ratio_line("ours / limit (throughput)", t_lim / t_ours))
    diff64 = float64_diff(norm, model, x[:16], y[:16], steps)
    print(f"max |x_adv(ours) - x_adv(torchattacks)| = {diff:.3g} (float32, whole batch), "
          f"{diff64:.3g} (float64, first 16 images)")
    return {"ours_ips": n / t_ours, "torchattacks_ips": n / t_ta, "limit_ips": n / t_lim,
            "ours_vs_torchattacks": t_ta / t_ours, "ours_vs_limit": t_lim / t_ours, "max_abs_diff": diff,
            "max_abs_diff_float64": diff64}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the PGD benchmark for both norms and return the figures per norm."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--synthetic", action="store_true", help="uniform-noise inputs instead of MNIST")
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    batch, steps, repeats = args.batch, args.steps, args.repeats
    if args.quick:
        batch, steps, repeats = min(batch, 32), min(steps, 5), min(repeats, 2)

    torch.manual_seed(0)
    model = MadryCNN().eval()
    x, y = load_inputs(batch, args.synthetic)
    print(f"\n== bench_pgd: {'synthetic' if args.synthetic else 'MNIST test'} inputs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"torchattacks {torchattacks.__version__}")
    return {norm: bench_norm(norm, model, x, y, steps, repeats) for norm in SETTINGS}


if __name__ == "__main__":
    main()
