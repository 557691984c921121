"""ROAR retraining: one round through NaturalTraining + Lightning vs a plain PyTorch loop; stacked vs sequential.

    .venv/bin/python bench/bench_roar.py [--quick] [--threads N] [--images 5000] [--models 8]

One retraining round = a fresh SmallCNN trained for one epoch (Adam 1e-3, batch 100) on ROAR-occluded
MNIST training images (50 % of the pixels replaced by the channel mean); the plain loop reads the same
tensors in the same order, so both end with the same weights (checked). The batched option trains
``--models`` such networks (each its own occluded data set and init) as one ``torch.func``-stacked
model and is compared with the same rounds run one after the other.
"""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import apply_threads, base_parser, data_dir, print_table, time_interleaved

from robustxai.analysis.occlusion import channel_mean, occlude, random_mask
from robustxai.analysis.roar import retrain_lightning, retrain_stacked
from robustxai.data.order import epoch_order
from robustxai.methods.natural import NaturalTraining
from robustxai.models.small_cnn import SmallCNN

warnings.filterwarnings("ignore")


def occluded_images(n: int, copies: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``copies`` ROAR-occluded versions (random 50 % masks) of the first n MNIST training images (digits offline)."""
    try:
        from robustxai.data.mnist import MNISTDataModule

        data = MNISTDataModule(data_dir=data_dir(), cache_dir=Path(__file__).resolve().parent / ".cache",
                               download=False, val_size=0)
        data.setup("fit")
        x, y = data.take("train", range(n))
    except (OSError, RuntimeError, ValueError):  # no MNIST copy: the embedded digits
        from robustxai.data.digits import digits_as_mnist

        x, y = digits_as_mnist()
        x, y = x[:n], y[:n]
    mean = channel_mean(x)
    shape = (len(x), x.shape[2], x.shape[3])
    return [occlude(x, random_mask(shape, 0.5, "roar", seed=i), mean) for i in range(copies)], y


def make_model() -> SmallCNN:
    return SmallCNN(in_channels=1, num_classes=10, input_size=28)


def plain_loop(x: torch.Tensor, y: torch.Tensor, seed: int, batch_size: int = 100) -> SmallCNN:
    """The hand-written round: same init (seed), same order (the tensor loader's epoch_order), Adam, CE."""
    torch.manual_seed(seed)
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = epoch_order(len(y), True, seed, 0, equal_shards=True)
    for start in range(0, len(y), batch_size):
        idx = order[start:start + batch_size]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="training images per round")
    parser.add_argument("--models", type=int, default=8, help="networks in the stacked (batched) run")
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    n, models = (1000, 4) if args.quick else (args.images, args.models)
    repeats = 1 if args.quick else 3
    xs, y = occluded_images(n, models)
    opt = functools.partial(torch.optim.Adam, lr=1e-3)
    method = functools.partial(NaturalTraining, optimizer=opt)

    def ours() -> SmallCNN:
        return retrain_lightning(make_model, method, xs[0], y, 10, seed=1, epochs=1, max_steps=None, batch_size=100)

    def ours_loop() -> SmallCNN:  # batched=true with group_size=1: the study's own plain loop
        return retrain_stacked(make_model, opt, [(xs[0], y)], [1], epochs=1, max_steps=None, batch_size=100)[0]

    a, b = ours(), plain_loop(xs[0], y, seed=1)
    same = max(float((p - q).detach().abs().max()) for p, q in zip(a.parameters(), b.parameters()))
    t = time_interleaved({"lightning": ours, "loop": ours_loop, "plain": lambda: plain_loop(xs[0], y, seed=1)},
                         warmup=1, repeats=repeats)
    single = {k: v.median for k, v in t.items()}

    seeds = list(range(1, models + 1))
    data = [(x, y) for x in xs]
    t2 = time_interleaved({
        "stacked": lambda: retrain_stacked(make_model, opt, data, seeds, epochs=1, max_steps=None, batch_size=100),
        "sequential": lambda: [retrain_lightning(make_model, method, x, y, 10, s, 1, None, 100) for x, s in zip(xs, seeds)],
        "sequential_plain": lambda: [plain_loop(x, y, s) for x, s in zip(xs, seeds)],
    }, warmup=0 if args.quick else 1, repeats=1 if args.quick else 2)
    many = {k: v.median for k, v in t2.items()}
    print_table(f"ROAR retraining round: SmallCNN, {n} occluded MNIST images, 1 epoch, batch 100 "
                f"(threads {torch.get_num_threads()}; max |weight difference| ours vs plain: {same:.1e})",
                ["run", "seconds", "plain / this (>= 1.0x: as fast as the plain loop)"],
                [["ours: NaturalTraining + Lightning Trainer", single["lightning"],
                  f"{single['plain'] / single['lightning']:.2f}x"],
                 ["ours: batched=true group_size=1 (the study's loop)", single["loop"],
                  f"{single['plain'] / single['loop']:.2f}x"],
                 ["plain PyTorch loop", single["plain"], "1.00x"]])
    print_table(f"{models} retrainings at once (batched=true) vs one after the other",
                ["run", "seconds", "speed-up of stacked"],
                [["stacked torch.func (vmap)", many["stacked"], "1.00x"],
                 ["sequential, Lightning", many["sequential"], f"{many['sequential'] / many['stacked']:.2f}x"],
                 ["sequential, plain loop", many["sequential_plain"],
                  f"{many['sequential_plain'] / many['stacked']:.2f}x"]])
    return {"plain_over_ours": single["plain"] / single["lightning"], "plain_over_loop": single["plain"] / single["loop"],
            "stacked_speedup_vs_lightning": many["sequential"] / many["stacked"],
            "stacked_speedup_vs_plain": many["sequential_plain"] / many["stacked"], "max_weight_diff": same}


if __name__ == "__main__":
    main()
