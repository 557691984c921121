"""Turn a multirun directory into a comparison table (markdown and CSV) of its jobs' metrics.

    python -m robustxai.analysis.compare outputs/quickstart/multiruns/<time>
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import yaml

# column order and the paper names of the headline metrics (RAR: NA, AA, IN, CO)
PREFERRED = ("test/acc", "test/robust_acc/", "test/topk_intersection/", "test/kendall/", "test/spearman/")
LEGEND = {"test/acc": "NA", "test/robust_acc/": "AA", "test/topk_intersection/": "IN", "test/kendall/": "CO"}


def _job_label(job_dir: Path) -> str:
    overrides = job_dir / ".hydra" / "overrides.yaml"
    if overrides.exists():
        items = yaml.safe_load(overrides.read_text()) or []
        return " ".join(str(item) for item in items) or job_dir.name
    return job_dir.name


def collect(sweep_dir: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Read every ``<job>/results.json`` under ``sweep_dir``: returns the metric columns and rows."""
    rows: list[dict[str, Any]] = []
    for results in sorted(sweep_dir.glob("*/results.json"), key=lambda p: (len(p.parent.name), p.parent.name)):
        metrics = json.loads(results.read_text()).get("metrics", {})
        rows.append({"job": results.parent.name, "overrides": _job_label(results.parent), **metrics})
    names = sorted({k for row in rows for k in row if k not in ("job", "overrides")})
    first = [n for n in names if n == PREFERRED[0]]
    first += [n for prefix in PREFERRED[1:] for n in names if n.startswith(prefix)]
    rest = [n for n in names if n not in first and n.startswith("test/") and "/max_" not in n]
    return first + rest, rows


def _header(column: str) -> str:
    """``test/kendall/topk`` -> ``CO test/kendall/topk``: the paper's name in front where it has one."""
    for prefix, short in LEGEND.items():
        if column == prefix or (prefix.endswith("/") and column.startswith(prefix)):
            return f"{short} {column}"
    return column


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))


def to_markdown(columns: list[str], rows: list[dict[str, Any]]) -> str:
    header = ["job", "overrides", *columns]
    lines = ["| " + " | ".join(_header(c) for c in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in header) + " |" for row in rows]
    return "\n".join(lines)


def write_tables(sweep_dir: Path) -> str:
    """Write ``comparison.md`` and ``comparison.csv`` into ``sweep_dir``; return the markdown."""
    columns, rows = collect(sweep_dir)
    if not rows:
        raise FileNotFoundError(f"no <job>/results.json under {sweep_dir}: is it a multirun directory?")
    markdown = to_markdown(columns, rows)
    (sweep_dir / "comparison.md").write_text(markdown + "\n")
    with open(sweep_dir / "comparison.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["job", "overrides", *columns], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return markdown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (holds <job>/results.json)")
    args = parser.parse_args(argv)
    print(write_tables(args.sweep_dir))


if __name__ == "__main__":
    main()
