"""Top-k attack on IG maps (RAR's IN/CO attack): seconds per image, ours vs its own gradient work alone.

The limit is a hand-written loop doing exactly the attack's gradient computations and nothing else:
per step one create_graph IG of the softplus surrogate + the backward of the top-k objective, one
label check and one IG map of the network for the selection. The rest (projection, Kendall tau
selection, per-image best-iterate state) is the overhead; the target is under 20 %.

Usage: .venv/bin/python bench/bench_explanation_attack.py [--quick] [--synthetic] [--batch 16] [--steps 10]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pgd import load_inputs
from common import apply_threads, base_parser, print_table, ratio_line, time_interleaved

from robustxai.attacks.base import attack_mode
from robustxai.attacks.explanation import TopKAttack
from robustxai.attacks.surrogate import softplus_surrogate
from robustxai.attributions.integrated_gradients import IntegratedGradients
from robustxai.models.madry_cnn import MadryCNN


def ig_map(model: nn.Module, x: Tensor, y: Tensor, m: int, create_graph: bool) -> Tensor:
    """Minimal right-Riemann IG from the zero baseline, |.| summed over channels, normalised to sum H*W."""
    n = len(x)
    alphas = torch.arange(1, m + 1, device=x.device, dtype=x.dtype) / m
    z = (alphas.view(1, m, 1, 1, 1) * x.unsqueeze(1)).reshape(n * m, *x.shape[1:])
    if not create_graph:
        z = z.detach().requires_grad_(True)
    logits = model(z).gather(1, y.repeat_interleave(m).unsqueeze(1))
    (grads,) = torch.autograd.grad(logits.sum(), z, create_graph=create_graph)
    sal = (x * grads.view(n, m, *x.shape[1:]).mean(dim=1)).abs().sum(dim=1)
    return sal * (sal[0].numel() / sal.sum(dim=(1, 2), keepdim=True))


def limit_loop(model: nn.Module, x: Tensor, y: Tensor, steps: int, m: int, k: int, eps: float,
               step: float) -> Callable[[], None]:
    """The same gradient passes as the attack (create_graph IG + backward, label check, IG map), nothing else."""
    def run() -> None:
        with attack_mode(model):
            surrogate = softplus_surrogate(model)
            clean = ig_map(model, x, y, m, create_graph=False)
            top = torch.zeros_like(clean.flatten(1)).scatter_(1, clean.flatten(1).topk(k, dim=1).indices, 1.0)
            x_adv = x.clone()
            for _ in range(steps):
                xi = x_adv.detach().requires_grad_(True)
                objective = -(ig_map(surrogate, xi, y, m, create_graph=True).flatten(1) * top).sum()
                (grad,) = torch.autograd.grad(objective, xi)
                x_adv = torch.clamp(x + torch.clamp(x_adv + step * grad.sign() - x, -eps, eps), 0, 1)
                with torch.no_grad():
                    model(x_adv).argmax(dim=1)
                ig_map(model, x_adv, y, m, create_graph=False)
    return run


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Time the top-k attack and its gradient-only limit on MNIST-shaped inputs; print the ratio."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="attack steps (RAR: 100; time is linear in it)")
    parser.add_argument("--ig-steps", type=int, default=100, help="IG path points (RAR: 100)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--synthetic", action="store_true", help="uniform-noise inputs instead of MNIST")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    batch, steps, m, repeats = args.batch, args.steps, args.ig_steps, args.repeats
    if args.quick:
        batch, steps, m, repeats = min(batch, 4), min(steps, 3), min(m, 10), min(repeats, 2)
    eps, step, k = 0.3, 0.01, 200  # RAR's MNIST setting

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = MadryCNN().eval().to(device)
    x, _ = load_inputs(batch, args.synthetic)
    x = x.to(device)
    y = model(x).argmax(dim=1)  # attack the model's own predictions (all "correctly classified")
    attack = TopKAttack(IntegratedGradients(steps=m, max_points_per_pass=None), eps=eps, step_size=step,
                        steps=steps, k_top=k, eval_k=100)
    print(f"\n== bench_explanation_attack: {'synthetic' if args.synthetic else 'MNIST test'} inputs, "
          f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads")

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    limit = limit_loop(model, x, y, steps, m, k, eps, step)
    timings = time_interleaved({
        "ours (TopKAttack)": lambda: (attack(model, x, y), sync()),
        "limit (bare gradient passes)": lambda: (limit(), sync()),
    }, warmup=1, repeats=repeats)
    rows = [[name, t.median, t.median / batch, min(t.times), max(t.times)] for name, t in timings.items()]
    print_table(f"top-k attack (MadryCNN, 28x28), batch {batch}, {steps} steps, IG {m} points, k_top {k}; "
                f"median of {repeats}", ["variant", "median s", "s / image", "min s", "max s"], rows)
    t_ours, t_lim = (t.median for t in timings.values())
    print(ratio_line("ours / limit (throughput)", t_lim / t_ours, target=1 / 1.2))
    print(f"overhead over the gradient passes: {100 * (t_ours / t_lim - 1):.1f} % (target < 20 %)")
    return {"ours_s_per_image": t_ours / batch, "limit_s_per_image": t_lim / batch,
            "ours_vs_limit": t_lim / t_ours, "overhead_fraction": t_ours / t_lim - 1}


if __name__ == "__main__":
    main()
