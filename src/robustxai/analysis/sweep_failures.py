"""Hydra callback: at the end of a multirun, name every job that failed, then exit with status 1."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

FAILED_FILE = "failed.json"  # written by robustxai.tasks.entry.run_task


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


__all__ = ["FailedJobsCallback", "failed_jobs"]
