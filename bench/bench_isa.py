"""ISA (seed 000's interpretability sneaking attack, CAM, two-class l1) vs the bare passes it needs.

Ours is ``ISA(...).run`` (the library path ``attack=isa_cam`` takes). The limit ("bare") is only the network
passes such a search cannot avoid, on the same released BoopathyNet 'small' and MNIST batch: one clean
forward (the targets), then stage 1: ``rounds`` x (``steps`` forwards + backwards to x' (logits only:
gamma = 0), one forward for the success test) and a final ``steps``-step run; stage 2 on the P-times stacked batch: one clean CAM,
``rounds`` x (``steps`` CAM forwards + backwards, one forward) and a final run with its forward: no margin,
no discrepancy, no projection, no bisection bookkeeping. A hand-written stage 1 (the seed's arithmetic in
plain PyTorch) checks the numbers: its eps_adv must equal ours.

Usage: .venv/bin/python bench/bench_isa.py [--quick] [--batch 50] [--threads 1]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pgd import load_inputs
from common import apply_threads, base_parser, print_table, time_interleaved

from robustxai.attacks.base import attack_mode
from robustxai.attacks.isa import ISA
from robustxai.attacks.losses import cw_margin
from robustxai.models import BoopathyNet, load_boopathy_network

TARGET = 1.2  # ours / bare, time
NETWORK = "mnist_smallgap_normal_100.pkl"


def bare_passes(model: nn.Module, x: Tensor, rounds: int, steps: int, penalties: int) -> None:
    """Only the passes of the search: CAM forward + backward to x' per step, one forward per success test."""
    with attack_mode(model, "eval"):
        with torch.no_grad():
            model(x)
        for batch, maps in ((x, False), (x.repeat(penalties, 1, 1, 1), True)):
            forward = model.cam if maps else model  # stage 1 (gamma = 0) needs the logits only
            if maps:
                with torch.no_grad():
                    model.cam(batch)
            for _ in range(rounds + 1):
                x_adv = batch.clone()
                for _ in range(steps):
                    x_adv.requires_grad_(True)
                    (grad,) = torch.autograd.grad(forward(x_adv).sum(), x_adv)
                    x_adv = x_adv.detach() + 1e-3 * grad.sign()
                with torch.no_grad():
                    model(x_adv)


def hand_stage1(model: nn.Module, x: Tensor, t: Tensor, rounds: int, steps: int, kappa: float = 0.1,
                grad_scale: float = 1000.0) -> Tensor:
    """The seed's stage 1 written out: per-image bisection on eps of a targeted CW attack from x."""
    n = len(x)
    eps, lo, hi = torch.full((n,), 0.05), torch.zeros(n), torch.ones(n)
    with attack_mode(model, "eval"):
        for _ in range(rounds):
            e = eps.view(-1, 1, 1, 1)
            x_adv = x.clone()
            for _ in range(steps):
                x_adv.requires_grad_(True)
                loss = cw_margin(model(x_adv), t).clamp(min=-kappa).sum()
                (grad,) = torch.autograd.grad(loss, x_adv)
                x_adv = x_adv.detach() - 0.2 * e * torch.clamp(grad_scale * grad, -1, 1)
                x_adv = torch.min(torch.max(x_adv, x - e), x + e).clamp(0, 1)
            with torch.no_grad():
                ok = cw_margin(model(x_adv), t) < 0
            hi, lo = torch.where(ok, eps, hi), torch.where(ok, lo, eps)
            eps = torch.where(ok, (lo + hi) / 2, torch.minimum(2 * eps, (lo + hi) / 2))
    return hi


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--synthetic", action="store_true", help="random images and a random network")
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    rounds, steps = (3, 5) if args.quick else (10, 10)
    batch = 10 if args.quick else args.batch
    penalties = [1.0, 1.5, 2.0, 2.5, 3.0]
    weights = Path(__file__).resolve().parents[2] / "shared" / "models" / "boopathy-networks" / NETWORK
    synthetic = args.synthetic or not weights.exists()
    model = BoopathyNet(arch="small") if synthetic else load_boopathy_network(str(weights))
    model.eval()
    x, y = load_inputs(batch, synthetic=synthetic)
    attack = ISA(penalties=penalties, rounds=rounds, steps=steps)

    torch.manual_seed(0)
    target = attack.targets(model, x, y)
    with attack_mode(model, "eval"):
        ours_eps = attack.min_eps(model, x, y, target)[1]
    hand_eps = hand_stage1(model, x, target, rounds, steps)
    same = bool(torch.equal(ours_eps, hand_eps))

    def ours_run() -> None:
        torch.manual_seed(0)  # the same targets every repeat
        attack.run(model, x, y)

    timings = time_interleaved({
        "ours": ours_run,
        "bare": lambda: bare_passes(model, x, rounds, steps, len(penalties)),
    }, warmup=1, repeats=1 if args.quick else args.repeats)
    ours, bare = timings["ours"].median, timings["bare"].median
    ratio = ours / bare
    print_table(f"ISA, BoopathyNet small ({'random' if synthetic else NETWORK}), {batch} MNIST images, "
                f"{rounds} rounds x {steps} steps, {len(penalties)} multipliers (median of "
                f"{len(timings['ours'].times)})",
                ["", "seconds", "images/s", "ours / bare"],
                [["ours (ISA.run)", ours, batch / ours, ratio], ["bare passes", bare, batch / bare, 1.0]])
    print(f"target: ours / bare <= {TARGET}: {'met' if ratio <= TARGET else 'NOT met'}; "
          f"hand-written stage 1 gives the same eps_adv: {same}")
    return {"isa_ours_s": ours, "isa_bare_s": bare, "isa_ratio": ratio, "isa_same_eps_adv": float(same)}


if __name__ == "__main__":
    main()
