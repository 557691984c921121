"""One natural-training epoch on MNIST: ours (Lightning + MNISTDataModule) vs a torchvision DataLoader loop
vs the compute-only limit (forward/backward/step on tensors already in memory).

Usage: .venv/bin/python bench/bench_train_epoch.py [--quick] [--model madry_cnn|small_cnn]
       [--batch-sizes 50,128] [--workers 0,2] [--images N (0: whole epochs)] [--profile]

Every variant runs the same number of steps at the same batch size from the same initialisation. The timed
steps are split into ``--rounds`` rounds that visit the variants in turn (so a shared machine's load falls on
all of them); fixed per-run costs (Trainer start, DataLoader workers' start) are paid once per round.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import logging
import pstats
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import ToTensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE_DIR, apply_threads, base_parser, data_dir, print_table, ratio_line  # noqa: E402

from robustxai.data.mnist import MNISTDataModule  # noqa: E402
from robustxai.methods.natural import NaturalTraining  # noqa: E402
from robustxai.models import MadryCNN, SmallCNN  # noqa: E402

MODELS = {"madry_cnn": MadryCNN, "small_cnn": SmallCNN}
LR = 1e-4
WARMUP_STEPS = 5


def torchvision_root() -> Path:
    """Where ``torchvision.datasets.MNIST`` finds uncompressed files: ``DATA_DIR`` or our decompressed cache."""
    if (data_dir() / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        return data_dir()
    return CACHE_DIR / "torchvision"  # where load_mnist_like decompresses the .gz files


def build_model(name: str) -> nn.Module:
    """The benchmarked model with a fixed-seed initialisation."""
    torch.manual_seed(0)
    return MODELS[name]()


def run_ours(dm: MNISTDataModule, model_name: str, steps: int, profile: bool = False) -> float:
    """Seconds of ``Trainer.fit`` for one (possibly truncated) epoch of ``NaturalTraining``."""
    module = NaturalTraining(build_model(model_name), optimizer=functools.partial(torch.optim.Adam, lr=LR))
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, limit_train_batches=steps)
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    trainer.fit(module, datamodule=dm)
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - start
    if trainer.global_step != steps:
        raise RuntimeError(f"Lightning ran {trainer.global_step} steps, expected {steps}")
    if profiler:
        stats = pstats.Stats(profiler).strip_dirs()
        print(f"\ncProfile of ours ({steps} steps): top functions by own time")
        stats.sort_stats("tottime").print_stats(25)
        print("top functions by cumulative time")
        stats.sort_stats("cumulative").print_stats(40)
    return seconds


def run_dataloader(ds: datasets.MNIST, model_name: str | None, batch_size: int, steps: int,
                   workers: int) -> float:
    """Seconds of a plain loop over ``DataLoader(shuffle=True)`` for ``steps`` steps (loader start included).

    With ``model_name=None`` the loop only fetches the batches: the data-loading cost alone.
    """
    model = build_model(model_name or "small_cnn").train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    start = time.perf_counter()
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers)
    for i, (x, y) in enumerate(loader):
        if i == steps:
            break
        if model_name is None:
            continue
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return time.perf_counter() - start


def run_compute(images: Tensor, labels: Tensor, model_name: str, batch_size: int, steps: int) -> float:
    """Seconds of ``steps`` forward/backward/Adam steps on contiguous slices of in-memory tensors."""
    model = build_model(model_name).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    start = time.perf_counter()
    for i in range(steps):
        x, y = images[i * batch_size:(i + 1) * batch_size], labels[i * batch_size:(i + 1) * batch_size]
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return time.perf_counter() - start


def bench_batch_size(batch_size: int, args: argparse.Namespace, dm: MNISTDataModule,
                     ds: datasets.MNIST) -> dict[str, object]:
    """Time the three ways at one batch size; print the table and the ratios."""
    dm.batch_size = batch_size  # read when Trainer.fit asks for the train loader
    images, labels = dm.splits["train"]
    images = images.float().div(255.0)  # the compute-only limit's pre-made float batches
    n_train = len(labels)
    n_images = min(args.images or n_train, n_train)
    steps = -(-n_images // batch_size)

    variants = {
        "ours (Lightning + MNISTDataModule)": lambda n: run_ours(dm, args.model, n),
        **{f"DataLoader loop, num_workers={w}": functools.partial(run_dataloader, ds, args.model, batch_size,
                                                                  workers=w) for w in args.workers},
        "compute-only limit": lambda n: run_compute(images, labels, args.model, batch_size, n),
        "(DataLoader batches alone, num_workers=0)": lambda n: run_dataloader(ds, None, batch_size, n, 0),
    }
    # warm-up: first-call costs (oneDNN kernels, Lightning imports, worker start) stay out of the timings
    for run in variants.values():
        run(WARMUP_STEPS)
    # the steps are split into rounds that visit every variant in turn, spreading a shared machine's noise
    chunks = [steps // args.rounds + (i < steps % args.rounds) for i in range(args.rounds)]
    seconds = dict.fromkeys(variants, 0.0)
    for chunk in chunks:
        for name, run in variants.items():
            seconds[name] += run(chunk)
    if args.profile:
        run_ours(dm, args.model, steps, profile=True)

    scale = n_train / n_images  # 1 for a whole epoch; otherwise the timed run is scaled up to one
    rows = [[name, steps, s, 1e3 * s / steps, n_images / s, s * scale] for name, s in seconds.items()]
    print_table(f"Natural training, {args.model}, Adam lr={LR}, batch {batch_size}, {n_images} of {n_train} "
                f"MNIST train images ({steps} steps in {args.rounds} rounds), {torch.get_num_threads()} threads",
                ["variant", "steps", "measured s", "ms/step", "images/s", f"epoch s ({n_train} img)"], rows)
    ours = seconds["ours (Lightning + MNISTDataModule)"]
    loops = {k: v for k, v in seconds.items() if k.startswith("DataLoader loop")}
    best_name = min(loops, key=loops.get)
    best = loops[best_name]
    limit = seconds["compute-only limit"]
    load = seconds["(DataLoader batches alone, num_workers=0)"]
    print(f"best DataLoader variant: {best_name}")
    print(ratio_line("(its ceiling, were ours at the limit: (limit s + batches alone s) / limit s)",
                     (limit + load) / limit))
    print(ratio_line("speedup of ours vs best DataLoader loop", best / ours, target=1.3))
    print(ratio_line("ours as a fraction of the compute-only limit (limit s / ours s)", limit / ours,
                     target=0.85, unit=""))
    return {"batch_size": batch_size, "steps": steps, "seconds": seconds,
            "speedup_vs_dataloader": best / ours, "fraction_of_limit": limit / ours}


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    """Run the epoch benchmark for every batch size and return its figures."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="madry_cnn")
    parser.add_argument("--batch-sizes", default="50,128", help="comma-separated; 50 is the RAR setting")
    parser.add_argument("--workers", default="0,2", help="DataLoader num_workers variants, comma-separated")
    parser.add_argument("--images", type=int, default=15000,
                        help="images per timed run; the epoch column scales it to the whole split "
                             "(0: time whole epochs, which takes ~4x longer)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds the timed steps are split into")
    parser.add_argument("--profile", action="store_true", help="cProfile our Lightning run and print the top")
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.workers = [int(w) for w in args.workers.split(",")]
    if args.quick:
        args.batch_sizes, args.images, args.rounds = args.batch_sizes[:1], 500, 1

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*(log_every_n_steps|does not have many workers|treespec).*")

    dm = MNISTDataModule(data_dir=data_dir(), val_size=0, download=False, cache_dir=CACHE_DIR)
    dm.setup("fit")  # decompresses the .gz files into CACHE_DIR/torchvision (DATA_DIR stays untouched)
    ds = datasets.MNIST(root=str(torchvision_root()), train=True, transform=ToTensor(), download=False)
    print(f"\n== bench_train_epoch: torch {torch.__version__}, lightning {L.__version__}, "
          f"{torch.get_num_threads()} threads")
    return [bench_batch_size(b, args, dm, ds) for b in args.batch_sizes]


if __name__ == "__main__":
    main()
