"""Integrated Gradients throughput: ours vs Captum at its best internal_batch_size vs a bare
forward+backward of all path points, and the cost of differentiable IG (create_graph + backward).

Usage: .venv/bin/python bench/bench_attributions.py [--quick] [--synthetic] [--batch 16] [--steps 50]
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Callable

import captum
import captum.attr
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pgd import load_inputs  # noqa: E402
from common import apply_threads, base_parser, print_table, ratio_line, time_interleaved  # noqa: E402

from robustxai.attributions import IntegratedGradients  # noqa: E402
from robustxai.attributions.path_points import DEFAULT_MAX_POINTS_PER_PASS  # noqa: E402
from robustxai.models.madry_cnn import MadryCNN  # noqa: E402


def chunk_sizes(points: int) -> list[int | None]:
    """The internal batch sizes swept for both libraries: None (one pass) and a few smaller chunks."""
    return [None] + [c for c in (2048, 512, 256, 128, 64) if c < points]


def limit(model: nn.Module, x: Tensor, y: Tensor, steps: int, chunk: int) -> Callable[[], None]:
    """The plain-PyTorch limit: forward + input-gradient backward of all N*steps (pre-built) points,
    in passes of ``chunk`` points as ours makes, with no path construction or accumulation."""
    points = x.repeat_interleave(steps, dim=0).split(chunk)
    targets = y.repeat_interleave(steps).split(chunk)

    def run() -> None:
        for p, t in zip(points, targets):
            z = p.clone().requires_grad_()
            torch.autograd.grad(model(z).gather(1, t[:, None]).sum(), z)
    return run


def differentiable_ig(model: nn.Module, ig: IntegratedGradients, x: Tensor, y: Tensor) -> Callable[[], None]:
    """IG with create_graph=True and a backward of the sum of the maps to the parameters (IG-NORM use)."""
    params = [p for p in model.parameters() if p.requires_grad]

    def run() -> None:
        maps = ig(model, x, y, create_graph=True)
        torch.autograd.grad(maps.sum(), params, allow_unused=True)  # the last bias has no effect on IG
    return run


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the IG benchmark and return its figures."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--synthetic", action="store_true", help="uniform-noise inputs instead of MNIST")
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    batch, steps, repeats = args.batch, args.steps, args.repeats
    if args.quick:
        batch, repeats = min(batch, 4), min(repeats, 2)
    warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")

    torch.manual_seed(0)
    model = MadryCNN().eval()
    x, y = load_inputs(batch, args.synthetic)
    points = batch * steps
    print(f"\n== bench_attributions: IG right rule, {steps} steps, batch {batch} "
          f"({points} path points), MadryCNN on {'synthetic' if args.synthetic else 'MNIST test'} "
          f"28x28 inputs, torch {torch.__version__}, {torch.get_num_threads()} threads, captum {captum.__version__}")

    captum_ig = captum.attr.IntegratedGradients(model)
    maps: dict[str, Tensor] = {}
    fns: dict[str, Callable[[], None]] = {}
    for chunk in chunk_sizes(points):
        def run_captum(chunk: int | None = chunk) -> None:
            maps["captum"] = captum_ig.attribute(x, target=y, n_steps=steps, method="riemann_right",
                                                 internal_batch_size=chunk)
        fns[f"captum internal_batch_size={chunk}"] = run_captum
    for chunk in chunk_sizes(points):
        if chunk == DEFAULT_MAX_POINTS_PER_PASS:
            continue  # timed below as the default
        ours = IntegratedGradients(steps=steps, rule="right", max_points_per_pass=chunk)

        def run_ours(ours: IntegratedGradients = ours) -> None:
            maps["ours"] = ours(model, x, y)
        fns[f"ours max_points_per_pass={chunk}"] = run_ours
    default = IntegratedGradients(steps=steps, rule="right")
    fns[f"ours default ({DEFAULT_MAX_POINTS_PER_PASS})"] = lambda: default(model, x, y)
    fns["ours create_graph=True + backward"] = differentiable_ig(model, default, x, y)
    fns["limit (bare fwd+bwd passes)"] = limit(model, x, y, steps, DEFAULT_MAX_POINTS_PER_PASS)

    fns["limit (bare fwd+bwd passes)"]()  # warm-up
    # phase 1: sweep the chunk sizes of both libraries (few repeats) to find Captum's best setting
    sweep = time_interleaved(fns, warmup=0, repeats=max(1, repeats - 1))
    print_table(f"phase 1: chunk-size sweep, median of {max(1, repeats - 1)}",
                ["variant", "median s", "images/s", "min s", "max s"],
                [[k, t.median, batch / t.median, min(t.times), max(t.times)] for k, t in sweep.items()])
    best_captum = min((t.median, k) for k, t in sweep.items() if k.startswith("captum"))[1]
    best_ours = min((t.median, k) for k, t in sweep.items() if k.startswith("ours max_points")
                    or k.startswith("ours default"))[1]
    # phase 2: head to head, interleaved, more repeats (picking the best of a noisy sweep alone
    # would favour whichever library has more settings in it)
    default_name = f"ours default ({DEFAULT_MAX_POINTS_PER_PASS})"
    final = {name: fns[name] for name in dict.fromkeys(
        [default_name, best_captum, "ours create_graph=True + backward", "limit (bare fwd+bwd passes)"])}
    timings = time_interleaved(final, warmup=0, repeats=repeats + 2)
    med = {name: t.median for name, t in timings.items()}
    print_table(f"phase 2: head to head, median of {repeats + 2}",
                ["variant", "median s", "images/s", "min s", "max s"],
                [[k, t.median, batch / t.median, min(t.times), max(t.times)] for k, t in timings.items()])
    t_default, t_captum = med[default_name], med[best_captum]
    t_diff = med["ours create_graph=True + backward"]
    t_limit = med["limit (bare fwd+bwd passes)"]
    print(f"best captum setting (phase 1): {best_captum}; best of ours: {best_ours}")
    print(ratio_line("ours (default) / captum (best internal_batch_size) (speed)", t_captum / t_default,
                     target=1.0))
    print(ratio_line("ours (default) / limit (speed)", t_limit / t_default))
    print(ratio_line("differentiable IG (create_graph + backward) / plain IG (cost)", t_diff / t_default))
    diff = (maps["ours"] - maps["captum"]).abs().max().item()
    scale = maps["captum"].abs().max().item()
    print(f"max |IG(ours) - IG(captum)| = {diff:.3g} (max |IG| = {scale:.3g}; Captum's path points are "
          f"float32 linspace values, ours exact k/m: at ReLU/max-pool kinks one of the {steps} points "
          f"can take the other branch)")
    return {"ours_vs_captum_best": t_captum / t_default, "ours_vs_limit": t_limit / t_default,
            "differentiable_cost": t_diff / t_default, "ours_s": t_default, "captum_best_s": t_captum,
            "max_abs_diff": diff}


if __name__ == "__main__":
    main()
