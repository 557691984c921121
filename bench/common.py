"""Shared helpers for the benchmarks: paths, timing (warm-up, repeats, median) and result tables."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO_ROOT / "bench" / ".cache"  # decompressed datasets; git-ignored (".cache/")


def data_dir() -> Path:
    """``$DATA_DIR`` (default ``../shared/data``), resolved relative to the repository root."""
    return (REPO_ROOT / (os.environ.get("DATA_DIR") or "../shared/data")).resolve()


def base_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark shares (``--quick``, ``--threads``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="short smoke run: few steps, few images")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads(N); default: leave torch's default")
    return parser


def apply_threads(threads: int | None) -> None:
    """Set torch's intra-op thread count when asked; otherwise keep the default."""
    if threads is not None:
        torch.set_num_threads(threads)


@dataclass
class Timing:
    """Wall-clock seconds of every timed repeat; ``median`` is the figure reported."""

    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def time_once(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes (``time.perf_counter``)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_interleaved(fns: dict[str, Callable[[], object]], warmup: int = 1,
                     repeats: int = 5) -> dict[str, Timing]:
    """Time each function ``repeats`` times after ``warmup`` untimed calls, round-robin.

    Interleaving the candidates spreads the noise of a shared machine evenly over them.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    timings = {name: Timing() for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            timings[name].times.append(time_once(fn))
    return timings


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    """Print ``rows`` under ``header`` as an aligned plain-text table."""
    cells = [header] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}\n{line}")
    for i, row in enumerate(cells):
        print("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print(line)
    print(line, flush=True)


def ratio_line(name: str, value: float, target: float | None = None, unit: str = "x") -> str:
    """``name: 1.23x`` plus whether the target is met, when there is one."""
    text = f"{name}: {value:.2f}{unit}"
    if target is not None:
        text += f"  (target >= {target:.2f}{unit}: {'met' if value >= target else 'NOT met'})"
    return text


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)
