"""Hydra callbacks at the end of a multirun: the comparison table and HTML report, then the failed jobs.

Hydra calls the end hooks in reverse order of ``hydra.callbacks``, so ``conf/hydra/default.yaml`` lists
``failed_jobs`` first: it runs last, after the table of the jobs that finished, and exits with status 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from robustxai.analysis.compare import write_tables
from robustxai.analysis.report import write_report

FAILED_FILE = "failed.json"  # written by robustxai.tasks.entry.run_task


class ComparisonTableCallback(Callback):
    """Hydra callback: after a multirun, print and save the comparison table of its jobs."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            markdown = write_tables(sweep_dir)
        except FileNotFoundError:
            return
        print(f"\nComparison of the jobs in {sweep_dir} (also comparison.md / comparison.csv):\n\n{markdown}\n")
        print(f"Report with figures, curves and masking checks: {write_report(sweep_dir)}\n")


def failed_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """The ``failed.json`` records of a multirun directory's jobs, in job order, each with its ``job`` name."""
    records = []
    for path in sorted(sweep_dir.glob(f"*/{FAILED_FILE}"), key=lambda p: (len(p.parent.name), p.parent.name)):
        record = json.loads(path.read_text())
        record["job"] = path.parent.name
        records.append(record)
    return records


class FailedJobsCallback(Callback):
    """After the other callbacks (the comparison table of the jobs that finished), list the failed jobs."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failed = failed_jobs(Path(config.hydra.sweep.dir))
        if not failed:
            return
        lines = [f"  job {r['job']} ({' '.join(r['overrides'])}): {r['error']}" for r in failed]
        sys.exit(f"{len(failed)} job(s) of the multirun failed (the others finished):\n" + "\n".join(lines))


__all__ = ["FAILED_FILE", "ComparisonTableCallback", "FailedJobsCallback", "failed_jobs"]
