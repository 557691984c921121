"""Rank metrics on attribution maps: our batched kendall_tau / spearman vs scipy (loop over maps) and
torchmetrics' KendallRankCorrCoef, on 784-pixel (28x28) and 16,384-pixel (128x128) maps.

``kendall_tau`` runs its compiled CPU kernel when it can build it (robustxai.metrics._kendall_kernel);
its eager torch path (the fallback, and the GPU path) is timed too. Ratios are speed ratios per map.

Usage: .venv/bin/python bench/bench_rank_metrics.py [--quick] [--threads N] [--repeats 5]
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np
import scipy.stats
import torch
import torchmetrics
from torch import Tensor
from torchmetrics.regression import KendallRankCorrCoef

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import apply_threads, base_parser, print_table, ratio_line, time_interleaved  # noqa: E402

from robustxai.metrics import _kendall_kernel  # noqa: E402
from robustxai.metrics.functional import _kendall_tau_eager, kendall_tau, spearman  # noqa: E402

# (side, maps for ours and scipy, maps for torchmetrics: it is O(D^2) with a Python loop over D)
SIZES = {784: (28, 256, 64), 16384: (128, 32, 2)}
TORCHMETRICS_INTERLEAVED_MAX_PIXELS = 784  # above this torchmetrics takes seconds per map: timed once


def map_pair(n: int, side: int, kind: str, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A clean and an 'attacked' batch of non-negative float32 maps (n, side, side).

    ``ties``: like channel-summed |IG| maps on MNIST under the zero baseline: ~80% exact zeros,
    the rest continuous; the attacked map keeps most zeros and rescales/perturbs the rest.
    ``distinct``: continuous values, no ties (natural-image maps).
    """
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(n, side, side, generator=g) ** 3
    noise = torch.rand(n, side, side, generator=g)
    if kind == "ties":
        support = torch.rand(n, side, side, generator=g) < 0.2
        clean = values * support
        moved = support ^ (torch.rand(n, side, side, generator=g) < 0.03)
        attacked = (values * (0.5 + noise)) * moved
    else:
        clean, attacked = values, values + 0.3 * noise
    return clean, attacked


def scipy_loop(fn, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([fn(a[i], b[i]).statistic for i in range(len(a))])


def torchmetrics_kendall(a: Tensor, b: Tensor) -> Tensor:
    """torchmetrics' class API: maps as columns (D, N), one output per map, variant b."""
    n = a.shape[0]
    metric = KendallRankCorrCoef(variant="b", num_outputs=n)
    if n == 1:  # torchmetrics wants 1-D inputs for a single output
        metric.update(a[0], b[0])
    else:
        metric.update(a.T.contiguous(), b.T.contiguous())
    return metric.compute().reshape(n)


def bench_size(pixels: int, kind: str, repeats: int, quick: bool) -> dict[str, float]:
    side, n, n_tm = SIZES[pixels]
    if quick:
        n, n_tm = max(n // 4, 2), max(n_tm // 2, 1)
    a, b = map_pair(n, side, kind)
    af, bf = a.reshape(n, -1), b.reshape(n, -1)
    an, bn = af.double().numpy(), bf.double().numpy()
    out: dict[str, object] = {}

    def ours_k() -> None:
        out["kendall"] = kendall_tau(a, b)

    def eager_k() -> None:
        out["kendall_eager"] = _kendall_tau_eager(af, bf)

    def scipy_k() -> None:
        out["scipy_kendall"] = scipy_loop(scipy.stats.kendalltau, an, bn)

    def ours_s() -> None:
        out["spearman"] = spearman(a, b)

    def scipy_s() -> None:
        out["scipy_spearman"] = scipy_loop(scipy.stats.spearmanr, an, bn)

    candidates = {"kendall_tau (ours, batched)": ours_k, "scipy.stats.kendalltau (loop)": scipy_k,
                  "spearman (ours, batched)": ours_s, "scipy.stats.spearmanr (loop)": scipy_s,
                  "kendall_tau eager torch path": eager_k}
    tm_name = "torchmetrics KendallRankCorrCoef"
    tm_call = {tm_name: lambda: out.__setitem__("tm", torchmetrics_kendall(af[:n_tm], bf[:n_tm]))}
    if pixels <= TORCHMETRICS_INTERLEAVED_MAX_PIXELS:  # cheap enough: timed in the same rounds as ours
        t = time_interleaved(candidates | tm_call, warmup=1, repeats=repeats)
    else:  # seconds per map: one call, no warm-up
        t = time_interleaved(candidates, warmup=1, repeats=repeats)
        t |= time_interleaved(tm_call, warmup=0, repeats=1)
    per_map = {name: timing.median / (n_tm if name == tm_name else n) for name, timing in t.items()}

    rows = [[name, 1e3 * sec, 1.0 / sec] for name, sec in per_map.items()]
    print_table(f"{pixels}-pixel maps ({side}x{side}, {kind}), {n} maps (torchmetrics: {n_tm}); "
                f"median of {repeats}", ["variant", "ms per map", "maps/s"], rows)
    k_ours, k_sp, s_ours, s_sp, k_eager, k_tm = per_map.values()
    print(ratio_line("kendall ours / scipy (speed)", k_sp / k_ours, target=1.0))
    print(ratio_line("kendall ours / torchmetrics (speed)", k_tm / k_ours, target=100.0))
    print(ratio_line("kendall eager path / scipy (speed)", k_sp / k_eager))
    print(ratio_line("kendall eager path / torchmetrics (speed)", k_tm / k_eager))
    print(ratio_line("spearman ours / scipy (speed)", s_sp / s_ours, target=1.0))
    if not torch.equal(out["kendall"], out["kendall_eager"]):
        raise AssertionError("kendall_tau: the compiled kernel and the eager path disagree")
    diff_k = float(np.abs(out["kendall"].double().numpy() - out["scipy_kendall"]).max())
    diff_s = float(np.abs(out["spearman"].double().numpy() - out["scipy_spearman"]).max())
    diff_tm = float(np.abs(out["tm"].double().numpy() - out["scipy_kendall"][:n_tm]).max())
    print(f"max |ours - scipy|: kendall {diff_k:.2g}, spearman {diff_s:.2g}; "
          f"max |torchmetrics - scipy| kendall {diff_tm:.2g}")
    return {"kendall_vs_scipy": k_sp / k_ours, "kendall_vs_torchmetrics": k_tm / k_ours,
            "kendall_eager_vs_scipy": k_sp / k_eager, "kendall_eager_vs_torchmetrics": k_tm / k_eager,
            "spearman_vs_scipy": s_sp / s_ours, "kendall_ms_per_map": 1e3 * k_ours,
            "kendall_eager_ms_per_map": 1e3 * k_eager,
            "scipy_kendall_ms_per_map": 1e3 * k_sp, "torchmetrics_kendall_ms_per_map": 1e3 * k_tm,
            "max_abs_diff_kendall": diff_k, "max_abs_diff_spearman": diff_s,
            "max_abs_diff_torchmetrics": diff_tm}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Run every (map size, map kind) case and return the figures per case."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    repeats = min(args.repeats, 2) if args.quick else args.repeats
    path = "compiled kernel" if _kendall_kernel.available() else "eager torch path (no compiled kernel)"
    print(f"\n== bench_rank_metrics: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"scipy {scipy.__version__}, torchmetrics {torchmetrics.__version__}; kendall_tau: {path}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for pixels in SIZES:
            for kind in ("ties", "distinct"):
                results[f"{pixels}_{kind}"] = bench_size(pixels, kind, repeats, args.quick)
    rows = [[case, r["kendall_vs_scipy"], r["kendall_vs_torchmetrics"], r["kendall_eager_vs_scipy"],
             r["kendall_eager_vs_torchmetrics"], r["spearman_vs_scipy"]] for case, r in results.items()]
    print_table(f"kendall_tau speed ratios ({torch.get_num_threads()} threads; load average after: "
                f"{os.getloadavg()[0]:.2f})", ["case", "ours/scipy", "ours/torchmetrics",
                                               "eager/scipy", "eager/torchmetrics", "spearman/scipy"], rows)
    return results


if __name__ == "__main__":
    main()
