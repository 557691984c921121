"""One IG-NORM training step (attack + loss + backward + optimiser step): ours vs a minimal hand-written PyTorch step.

Both run the same objective on the same MadryCNN weights and MNIST batch: PGD (random start, sign steps)
on the cheap loss-IG norm (m/approx_factor points), then CE(x) + lam * ||IG_m(x, x')||_1 (batch sums),
backward, Adam step. Memory: torch.cuda.max_memory_allocated of a step on GPU; on CPU the bytes of the
tensors autograd saves (saved_tensors_hooks) in the update graph and in one attack step's graph.

Usage: .venv/bin/python bench/bench_ig_norm.py [--quick] [--batch 50] [--attack-steps 40] [--ig-steps 50]
"""

from __future__ import annotations

import copy
import sys
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pgd import load_inputs  # noqa: E402
from common import Timing, apply_threads, base_parser, print_table, ratio_line, time_interleaved  # noqa: E402

from robustxai.attacks.attribution_norm import AttributionNormPGD  # noqa: E402
from robustxai.attacks.base import attack_mode  # noqa: E402
from robustxai.methods.ig_norm import IGNorm  # noqa: E402
from robustxai.models import MadryCNN  # noqa: E402


# -- the hand-written reference ------------------------------------------------------------------------------------
def hand_ig_norm(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, m: int, every: int) -> tuple[Tensor, Tensor]:
    """Sum over the batch of ||IG||_1 along x -> x_adv (right Riemann, points every..m), and logits at x_adv."""
    alphas = torch.arange(every, m + 1, every, dtype=x.dtype, device=x.device).div(m).view(-1, 1, 1, 1, 1)
    z = (x + alphas * (x_adv - x)).flatten(0, 1)
    if not z.requires_grad:
        z.requires_grad_(True)
    logits = model(z)
    log_p = F.log_softmax(logits, 1).gather(1, y.repeat(len(alphas))[:, None])
    loss = -log_p.clamp(min=-23.025850929940457, max=0.0).sum()
    (g,) = torch.autograd.grad(loss, z, create_graph=True)
    ig = (x_adv - x) * g.view(len(alphas), *x.shape).sum(0) * (every / m)
    return ig.abs().sum(), logits[-len(x):]


def hand_step(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, eps: float, step: float,
              steps: int, m: int, every: int, lam: float) -> Tensor:
    """A minimal IG-NORM step: PGD on R_approx in eval mode with parameter grads off, then the update."""
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(False)
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(hand_ig_norm(model, x, x_adv, y, m, every)[0], x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step * grad.sign(), x - eps), x + eps).clamp(0, 1)
    for p in params:
        p.requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum") + lam * hand_ig_norm(model, x, x_adv, y, m, 1)[0]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def cpu_timed(fn: Callable[[], object], timing: Timing) -> None:
    """Call ``fn`` and record the process CPU time it took (wall clock is timed by the caller)."""
    start = time.process_time()
    fn()
    timing.times.append(time.process_time() - start)


def ours_step(method: IGNorm, opt: torch.optim.Optimizer, x: Tensor, y: Tensor) -> Tensor:
    loss, _ = method.training_loss(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


# -- memory --------------------------------------------------------------------------------------------------------
@contextmanager
def saved_tensor_bytes(counter: list[int]) -> Iterator[None]:
    """Add the bytes of every tensor autograd saves for backward (distinct storages) to ``counter[0]``."""
    seen: set[int] = set()

    def pack(t: Tensor) -> Tensor:
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            counter[0] += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield


def graph_saved_mib(build: Callable[[], Tensor]) -> float:
    """MiB of tensors autograd saves while ``build`` makes one graph (kept alive until counted)."""
    counter = [0]
    with saved_tensor_bytes(counter):
        out = build()
    del out
    return counter[0] / 2**20


def memory_report(method: IGNorm, attack: AttributionNormPGD, model_hand: nn.Module, x: Tensor, y: Tensor,
                  m: int, a: int, lam: float, run_ours: Callable[[], object], run_hand: Callable[[], object],
                  device: torch.device) -> dict[str, float]:
    """Peak memory of a whole step (CUDA), or the saved-tensor size of the two graphs a step builds (CPU).

    On CPU the step's peak is about the larger of the update graph and one attack step's graph (each
    freed before the next); tensors are counted once per storage within one live graph.
    """
    if device.type == "cuda":
        out = {}
        for name, fn in (("ours", run_ours), ("hand", run_hand)):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn()
            torch.cuda.synchronize()
            out[f"{name}_step_peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
        return out
    x_adv = attack(method.model, x, y)
    method.adversarial = lambda *_: x_adv  # the update alone, at a fixed x'
    out = {"ours_update_mib": graph_saved_mib(lambda: method.training_loss(x, y)[0]),
           "hand_update_mib": graph_saved_mib(lambda: F.cross_entropy(model_hand(x), y, reduction="sum")
                                              + lam * hand_ig_norm(model_hand, x, x_adv, y, m, 1)[0])}
    del method.adversarial
    x_req = x_adv.clone().requires_grad_(True)
    with attack_mode(method.model), attack_mode(model_hand):
        out["ours_attack_graph_mib"] = graph_saved_mib(lambda: attack.batch_objective(method.model, x, x_req, y))
        out["hand_attack_graph_mib"] = graph_saved_mib(lambda: hand_ig_norm(model_hand, x, x_req, y, m, a)[0])
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Time one IG-NORM step of ours and of the hand-written step; return times, ratio and memory."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--attack-steps", type=int, default=40)
    parser.add_argument("--ig-steps", type=int, default=50)
    parser.add_argument("--approx-factor", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--synthetic", action="store_true", help="uniform-noise inputs instead of MNIST")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    batch, steps, m, a, repeats = args.batch, args.attack_steps, args.ig_steps, args.approx_factor, args.repeats
    if args.quick:
        steps, m, a, repeats = min(steps, 2), min(m, 10), min(a, 5), min(repeats, 3)
    device = torch.device(args.device)
    eps, step, lam = 0.3, 0.01, 1.0

    torch.manual_seed(0)
    model_ours = MadryCNN().to(device)
    model_hand = copy.deepcopy(model_ours)
    x, y = load_inputs(batch, args.synthetic)
    x, y = x.to(device), y.to(device)
    attack = AttributionNormPGD(eps=eps, step_size=step, steps=steps, objective="ig_norm", ig_steps=m, approx_factor=a)
    method = IGNorm(model_ours, partial(torch.optim.Adam, lr=1e-4), attack, lam=lam, ig_steps=m, reduction="sum")
    opt_ours = method.configure_optimizers()
    opt_hand = torch.optim.Adam(model_hand.parameters(), lr=1e-4)

    # correctness first: one step each from the same weights and the same random start
    torch.manual_seed(1)
    loss_ours = ours_step(method, opt_ours, x, y)
    torch.manual_seed(1)
    loss_hand = hand_step(model_hand, opt_hand, x, y, eps, step, steps, m, a, lam)
    weight_diff = max((p - q).abs().max().item() for p, q in zip(model_ours.parameters(), model_hand.parameters()))
    loss_rel = abs(loss_ours.item() - loss_hand.item()) / abs(loss_hand.item())

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    run_ours = lambda: (ours_step(method, opt_ours, x, y), sync())  # noqa: E731
    run_hand = lambda: (hand_step(model_hand, opt_hand, x, y, eps, step, steps, m, a, lam), sync())  # noqa: E731
    fns = {"ours (IGNorm.training_loss + backward + Adam)": run_ours, "hand-written PyTorch step": run_hand}
    cpu = {name: Timing() for name in fns}
    timed = {name: (lambda fn=fn, name=name: cpu_timed(fn, cpu[name])) for name, fn in fns.items()}
    timings = time_interleaved(timed, warmup=1, repeats=repeats)
    memory = memory_report(method, attack, model_hand, x, y, m, a, lam, run_ours, run_hand, device)

    passes = steps * (m // a) + m
    print(f"\n== bench_ig_norm: {'synthetic' if args.synthetic else 'MNIST test'} inputs, MadryCNN, batch {batch}, "
          f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"attack {steps} steps x {m // a} points + update {m} points = {passes} batch double-backprop passes")
    rows = [[name, t.median, min(t.times), max(t.times), cpu[name].median] for name, t in timings.items()]
    print_table(f"one IG-NORM training step; median of {repeats} (wall clock; CPU time of this process)",
                ["variant", "median s", "min s", "max s", "median CPU s"], rows)
    t_ours, t_hand = (t.median for t in timings.values())
    c_ours, c_hand = (c.median for c in cpu.values())
    print(ratio_line("ours / hand-written (steps per second; time ratio <= 1.15 wanted)", t_hand / t_ours,
                     target=1 / 1.15))
    print(f"time ratio ours / hand-written: {t_ours / t_hand:.3f} (wall clock), {c_ours / c_hand:.3f} (process CPU "
          f"time, less sensitive to other processes on a shared machine)")
    print("memory (MiB): " + ", ".join(f"{k[:-4]} {v:.1f}" for k, v in memory.items()))
    print(f"first step from equal weights: |loss ours - hand| / |hand| = {loss_rel:.2e}, "
          f"max |w ours - w hand| = {weight_diff:.2e}")
    return {"ours_s": t_ours, "hand_s": t_hand, "ours_vs_hand_time": t_ours / t_hand,
            "ours_cpu_s": c_ours, "hand_cpu_s": c_hand, "ours_vs_hand_cpu_time": c_ours / c_hand, **memory,
            "loss_rel_diff": loss_rel, "weight_max_abs_diff": weight_diff, "passes": passes}


if __name__ == "__main__":
    main()
