"""Woods et al. training steps on the ResNet-44: the cost of the robust additions (double backprop) and of
adversarial training, vs a plain step and vs a hand-written minimal PyTorch step of the same objective.

Usage: .venv/bin/python bench/bench_woods_train.py [--quick] [--batch 128] [--repeats 5] [--synthetic]
       [--device cpu|cuda]

Every variant is one full optimiser step (zero_grad, loss, backward, SGD step) in train mode on the same
CIFAR-10 test images (or uniform noise with --synthetic), from the same initialisation. Memory: the bytes of
the distinct storages autograd saves during one step without an attack (activations of the forward and, with
create_graph, of the first backward: what double backprop adds); the attack variants free each attack
step's graph before the next, so that sum would not be a peak and is not reported for them. On CUDA also
the peak allocated memory of every variant.
"""

from __future__ import annotations

import copy
import math
import sys
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import apply_threads, base_parser, data_dir, print_table, ratio_line, time_interleaved  # noqa: E402

from robustxai.attacks.woods import WoodsAttack  # noqa: E402
from robustxai.data.cifar10 import load_cifar10  # noqa: E402
from robustxai.methods.woods import WoodsTraining  # noqa: E402
from robustxai.models.woods_resnet import WoodsResNet  # noqa: E402


def load_inputs(batch: int, synthetic: bool, device: torch.device) -> tuple[Tensor, Tensor]:
    """The first ``batch`` CIFAR-10 test images in [0, 1] with labels (uniform noise if synthetic)."""
    if synthetic:
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)
    else:
        images, labels = load_cifar10(data_dir(), train=False, download=False, cache_dir=None)
        x, y = images[:batch].float().div(255.0), labels[:batch]
    return x.to(device), y.to(device)


def sgd(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)


def method_step(method: WoodsTraining, x: Tensor, y: Tensor) -> Callable[[], None]:
    """One optimiser step through ``WoodsTraining.training_loss`` (what the Lightning loop calls)."""
    opt = sgd(method.parameters())

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        loss, _ = method.training_loss(x, y)
        loss.backward()
        opt.step()
    return run


def hand_written_robust_step(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[], None]:
    """The seed's ``_model_train_batch`` with robust additions, written out in plain PyTorch."""
    opt = sgd(model.parameters())
    state = {"integral": 0.0}

    def run() -> None:
        x_req = x.detach().requires_grad_(True)
        logits = model(x_req)
        ce = F.cross_entropy(logits, y)
        integral = state["integral"] + max(-0.01, min(1.0, -math.log(ce.item() / 1.5)))
        state["integral"] = max(0.0, integral)
        fair = logits.gather(1, torch.rand(logits.shape, device=x.device).argmax(1, keepdim=True))[:, 0]
        tandem = (torch.rand(len(y), device=x.device) < 0.2).float()
        others = logits.clone().scatter(1, y[:, None], (logits.detach().min() - 1).expand(len(y), 1))
        margin = logits.gather(1, y[:, None])[:, 0] - others.max(1)[0]
        s = tandem * margin + (1 - tandem) * fair
        grad, = torch.autograd.grad(s.sum(), x_req, create_graph=True)
        loss = ce + 220 * math.exp(0.02 * state["integral"]) * grad.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return run


def saved_bytes(step: Callable[[], None]) -> int:
    """Bytes of the distinct storages autograd saves for backward during one call of ``step``."""
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(storages.values())


def peak_cuda_bytes(step: Callable[[], None], device: torch.device) -> float:
    if device.type != "cuda":
        return float("nan")
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    return float(torch.cuda.max_memory_allocated(device))


def synced(step: Callable[[], None], device: torch.device) -> Callable[[], None]:
    if device.type != "cuda":
        return step

    def run() -> None:
        step()
        torch.cuda.synchronize(device)
    return run


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Time every variant, print the table and the ratios, return the figures."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--synthetic", action="store_true", help="uniform-noise inputs instead of CIFAR-10 test")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    batch, repeats = args.batch, args.repeats
    if args.quick:
        batch, repeats = min(batch, 32), min(repeats, 3)
    device = torch.device(args.device)
    x, y = load_inputs(batch, args.synthetic, device)
    warnings.filterwarnings("ignore", message=r".*self\.log.*")   # training_loss outside a Trainer

    torch.manual_seed(0)
    relu_net = WoodsResNet(activation="relu").to(device).train()
    torch.manual_seed(0)
    hh_net = WoodsResNet(activation="half_huber").to(device).train()
    attack = dict(steps=7, sanity_check="off", model_mode="train")
    variants = {
        "plain CE (ReLU)": method_step(WoodsTraining(copy.deepcopy(relu_net), sgd), x, y),
        "plain CE (half-Huber)": method_step(WoodsTraining(copy.deepcopy(hh_net), sgd), x, y),
        "robust additions (ours)": method_step(WoodsTraining(copy.deepcopy(hh_net), sgd, lipschitz=True), x, y),
        "robust additions (hand-written)": hand_written_robust_step(copy.deepcopy(hh_net), x, y),
        "adv-train L2 eps 0.01 (ours)": method_step(
            WoodsTraining(copy.deepcopy(relu_net), sgd, attack=WoodsAttack(eps=0.01, **attack)), x, y),
        "all: L2,min half-half + robust (ours)": method_step(
            WoodsTraining(copy.deepcopy(hh_net), sgd, lipschitz=True,
                          attack=WoodsAttack(eps=0.1, mode="l2min", track_best=False, half_and_half=True,
                                             **attack)), x, y),
    }
    variants = {name: synced(fn, device) for name, fn in variants.items()}
    with_attack = {"adv-train L2 eps 0.01 (ours)", "all: L2,min half-half + robust (ours)"}
    memory: dict[str, float] = {}
    for name, fn in variants.items():                                        # also the warm-up call
        memory[name] = float("nan") if name in with_attack else float(saved_bytes(fn))
        if name in with_attack:
            fn()
    cuda_peak = {name: peak_cuda_bytes(fn, device) for name, fn in variants.items()}
    timings = time_interleaved(variants, warmup=0, repeats=repeats)

    print(f"\n== bench_woods_train: WoodsResNet-44 (train mode), batch {batch}, "
          f"{'synthetic' if args.synthetic else 'CIFAR-10 test'} inputs, {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {repeats}")
    rows = [[name, t.median, batch / t.median, memory[name] / 2**20, cuda_peak[name] / 2**20]
            for name, t in timings.items()]
    print_table("one optimiser step", ["variant", "median s", "images/s", "autograd saved MiB", "CUDA peak MiB"],
                rows)
    med = {name: t.median for name, t in timings.items()}
    plain_hh, robust = med["plain CE (half-Huber)"], med["robust additions (ours)"]
    figures = {
        "double_backprop_cost": robust / plain_hh,
        "robust_vs_plain_relu": robust / med["plain CE (ReLU)"],
        "half_huber_vs_relu": plain_hh / med["plain CE (ReLU)"],
        "ours_vs_hand_written": med["robust additions (hand-written)"] / robust,
        "adv_train_vs_plain": med["adv-train L2 eps 0.01 (ours)"] / med["plain CE (ReLU)"],
        "all_vs_plain": med["all: L2,min half-half + robust (ours)"] / med["plain CE (ReLU)"],
        "robust_memory_ratio": memory["robust additions (ours)"] / memory["plain CE (half-Huber)"],
        "batch": batch,
    }
    print(ratio_line("robust additions / plain CE, both half-Huber (time: the double-backprop cost)",
                     figures["double_backprop_cost"]))
    print(ratio_line("robust additions (half-Huber) / plain CE (ReLU) (time)", figures["robust_vs_plain_relu"]))
    print(ratio_line("plain CE half-Huber / ReLU (time)", figures["half_huber_vs_relu"]))
    print(ratio_line("ours / hand-written (throughput; >= 1 means ours is as fast)", figures["ours_vs_hand_written"]))
    print(ratio_line("adv-train / plain (time)", figures["adv_train_vs_plain"]))
    print(ratio_line("all / plain (time)", figures["all_vs_plain"]))
    print(ratio_line("robust / plain half-Huber (autograd saved memory)", figures["robust_memory_ratio"]))
    return figures


if __name__ == "__main__":
    main()
