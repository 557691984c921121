"""Run every benchmark and print its tables: ``.venv/bin/python bench/run_all.py [--quick] [--threads N]``."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ara  # noqa: E402
import bench_attributions  # noqa: E402
import bench_explanation_attack  # noqa: E402
import bench_gradcam  # noqa: E402
import bench_ig_norm  # noqa: E402
import bench_int_step  # noqa: E402
import bench_pgd  # noqa: E402
import bench_rank_metrics  # noqa: E402
import bench_train_epoch  # noqa: E402
import bench_woods_train  # noqa: E402
from common import base_parser  # noqa: E402

BENCHMARKS = {
    "pgd": bench_pgd.main,
    "train_epoch": bench_train_epoch.main,
    "attributions": bench_attributions.main,
    "rank_metrics": bench_rank_metrics.main,
    "explanation_attack": bench_explanation_attack.main,
    "ig_norm": bench_ig_norm.main,
    "ara": bench_ara.main,
    "woods_train": bench_woods_train.main,
    "gradcam": bench_gradcam.main,
    "roar": __import__("bench_roar").main,
    "int_step": bench_int_step.main,
    "isa": __import__("bench_isa").main,
}


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Run each benchmark with the shared options (``--quick``, ``--threads``); return their figures."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these benchmarks")
    args = parser.parse_args(argv)
    shared = (["--quick"] if args.quick else []) + ([f"--threads={args.threads}"] if args.threads else [])
    results = {}
    for name, run in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        results[name] = run(shared)
        print(f"[{name}: {time.perf_counter() - start:.0f} s]", flush=True)
    return results


if __name__ == "__main__":
    main()
