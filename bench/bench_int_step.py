"""One Int training step (seed 000: D_int attack + CE(x) + lam D_int + backward + Adam) vs the bare passes it needs.

Ours is ``InterpretabilityTraining(discrepancy="int")`` with ``CAMDiscrepancyPGD`` (the library path a run
takes). The limit ("bare") is only the network passes such a step cannot avoid, on the same BoopathyNet
'small' and MNIST batch: one clean CAM forward without a graph (the attack's reference), ``attack_steps``
CAM forwards of x' with a backward of their sum to x', one CAM forward of [x; x'] with a backward to the
parameters, and the Adam step: no discrepancy, no projection, no clipping. A hand-written step with the
same arithmetic as ours (same random start) checks the numbers: its weights after one step must equal ours.

Usage: .venv/bin/python bench/bench_int_step.py [--quick] [--batch 50] [--attack-steps 40]
"""

from __future__ import annotations

import copy
import sys
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ig_norm import cpu_timed, ours_step  # noqa: E402  (the step and CPU timer are the same)
from bench_pgd import load_inputs  # noqa: E402
from common import Timing, apply_threads, base_parser, print_table, time_interleaved  # noqa: E402

from robustxai.attacks.cam_discrepancy import CAMDiscrepancyPGD  # noqa: E402
from robustxai.methods.interpretability import InterpretabilityTraining  # noqa: E402
from robustxai.models import BoopathyNet  # noqa: E402

TARGET = 1.2  # ours / bare, time


def hand_d_int(cam: Tensor, cam_adv: Tensor, y: Tensor) -> Tensor:
    """D_int written out: true-class l1 + sum over c != y of q_c(x') l1_c, q the renormalised softmax."""
    l1 = (cam_adv - cam).abs().sum((2, 3))
    p = torch.softmax(cam_adv.mean((2, 3)), 1) * (1 - F.one_hot(y, cam.shape[1]))
    q = p / p.sum(1, keepdim=True)
    return l1.gather(1, y[:, None]).squeeze(1) + (q * l1).sum(1)


def hand_step(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, eps: float, step: float,
              steps: int, lam: float) -> Tensor:
    """The seed's Int step in plain PyTorch: PGD on D_int from U(-eps, eps), then CE(x) + lam mean D_int."""
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(False)
    with torch.no_grad():
        cam = model.cam(x)
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad((lam * hand_d_int(cam, model.cam(x_adv), y)).sum(), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step * grad.sign(), x - eps), x + eps).clamp(0, 1)
    for p in params:
        p.requires_grad_(True)
    cams = model.cam(torch.cat([x, x_adv]))
    cam, cam_adv = cams[:len(x)], cams[len(x):]
    loss = F.cross_entropy(cam.mean((2, 3)), y) + lam * hand_d_int(cam, cam_adv, y).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def bare_step(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, steps: int) -> None:
    """Only the passes: clean CAM (no graph), ``steps`` x (CAM of x', backward to x'), CAM of [x; x'] + backward."""
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(False)
    with torch.no_grad():
        model.cam(x)
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(model.cam(x_adv).sum(), x_adv)
        x_adv = x_adv.detach() + grad
    for p in params:
        p.requires_grad_(True)
    opt.zero_grad(set_to_none=True)
    model.cam(torch.cat([x, x_adv])).sum().backward()
    opt.step()


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Time one Int step of ours, the hand-written step and the bare passes; return times and ratios."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--attack-steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--synthetic", action="store_true", help="uniform-noise inputs instead of MNIST")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    steps, repeats = (min(args.attack_steps, 2), min(args.repeats, 2)) if args.quick else (args.attack_steps,
                                                                                           args.repeats)
    device = torch.device(args.device)
    eps, step, lam = 0.3, 0.01, 0.01

    torch.manual_seed(0)
    model_ours = BoopathyNet("small", 1, 10).to(device)
    model_hand, model_bare = copy.deepcopy(model_ours), copy.deepcopy(model_ours)
    x, y = load_inputs(args.batch, args.synthetic)
    x, y = x.to(device), y.to(device)
    method = InterpretabilityTraining(model_ours, partial(torch.optim.Adam, lr=1e-4),
                                      CAMDiscrepancyPGD(eps=eps, step_size=step, steps=steps, lam=lam), lam=lam)
    opt_ours = method.configure_optimizers()
    opt_hand = torch.optim.Adam(model_hand.parameters(), lr=1e-4)
    opt_bare = torch.optim.Adam(model_bare.parameters(), lr=1e-4)

    torch.manual_seed(1)
    loss_ours = ours_step(method, opt_ours, x, y)
    torch.manual_seed(1)
    loss_hand = hand_step(model_hand, opt_hand, x, y, eps, step, steps, lam)
    weight_diff = max((p - q).abs().max().item() for p, q in zip(model_ours.parameters(), model_hand.parameters()))
    loss_rel = abs(loss_ours.item() - loss_hand.item()) / abs(loss_hand.item())

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fns = {"ours (InterpretabilityTraining + backward + Adam)": lambda: (ours_step(method, opt_ours, x, y), sync()),
           "hand-written Int step (same arithmetic)": lambda: (hand_step(model_hand, opt_hand, x, y, eps, step,
                                                                         steps, lam), sync()),
           "bare passes (the limit)": lambda: (bare_step(model_bare, opt_bare, x, steps), sync())}
    cpu = {name: Timing() for name in fns}
    timed = {name: (lambda fn=fn, name=name: cpu_timed(fn, cpu[name])) for name, fn in fns.items()}
    timings = time_interleaved(timed, warmup=1, repeats=repeats)

    print(f"\n== bench_int_step: {'synthetic' if args.synthetic else 'MNIST test'} inputs, BoopathyNet small, "
          f"batch {args.batch}, {steps} attack steps, device {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    rows = [[name, t.median, min(t.times), max(t.times), cpu[name].median] for name, t in timings.items()]
    print_table(f"one Int training step; median of {repeats} (wall clock; CPU time of this process)",
                ["variant", "median s", "min s", "max s", "median CPU s"], rows)
    t_ours, t_hand, t_bare = (t.median for t in timings.values())
    c_ours, c_hand, c_bare = (c.median for c in cpu.values())
    ratio, cpu_ratio = t_ours / t_bare, c_ours / c_bare
    print(f"ours / bare passes: {ratio:.3f} wall clock, {cpu_ratio:.3f} process CPU time "
          f"(target <= {TARGET:.2f}: {'met' if min(ratio, cpu_ratio) <= TARGET else 'NOT met'})")
    print(f"ours / hand-written: {t_ours / t_hand:.3f} wall clock, {c_ours / c_hand:.3f} process CPU time")
    print(f"first step from equal weights: |loss ours - hand| / |hand| = {loss_rel:.2e}, "
          f"max |w ours - w hand| = {weight_diff:.2e}")
    return {"ours_s": t_ours, "hand_s": t_hand, "bare_s": t_bare, "ours_vs_bare_time": ratio,
            "ours_vs_bare_cpu_time": cpu_ratio, "ours_vs_hand_time": t_ours / t_hand, "loss_rel_diff": loss_rel,
            "weight_max_abs_diff": weight_diff}


if __name__ == "__main__":
    main()
