"""What every entry point does around its task: clear errors, and multiruns that survive a failing job.

A :class:`~robustxai.errors.UserError` (a bad value, a missing file) ends a single run with one line,
``Error: <message>``, and exit status 1, never a traceback; so does a ``ValueError`` raised by a library
check that no config check caught earlier (``ROBUSTXAI_TRACEBACK=1`` shows where it was raised). Inside a multirun, a failing job (any error)
is written to ``<job dir>/failed.json`` and to the log, the sweep goes on with the other jobs, and
:class:`robustxai.analysis.sweep_callbacks.FailedJobsCallback` lists the failed jobs at the end.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from robustxai.analysis.sweep_callbacks import FAILED_FILE
from robustxai.errors import UserError

log = logging.getLogger("robustxai")


def _multirun_job_dir() -> tuple[Path, list[str]] | None:
    """This job's output directory and overrides when it is one job of a multirun, else ``None``."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):
        return None
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task)


def run_task(task: Callable[..., dict[str, float]], cfg: DictConfig, **kwargs: Any) -> float | None:
    """Run ``task(cfg, **kwargs)``; return ``cfg.optimized_metric`` of its metrics (for sweepers)."""
    job = _multirun_job_dir()
    try:
        metrics = task(cfg, **kwargs)
    except Exception as err:  # noqa: BLE001 - every failure of a multirun job is recorded, then the sweep goes on
        if job is None:
            if isinstance(err, UserError):
                sys.exit(f"Error: {err}")
            if isinstance(err, ValueError) and not os.environ.get("ROBUSTXAI_TRACEBACK"):
                # a library check (check_range, a torch argument check) that no config check caught first
                sys.exit(f"Error: {err}\n(set ROBUSTXAI_TRACEBACK=1 to see where it was raised)")
            raise
        job_dir, overrides = job
        message = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / FAILED_FILE).write_text(json.dumps({"overrides": overrides, "error": message,
                                                       "traceback": traceback.format_exc()}, indent=2))
        log.error("Job %s failed: %s", " ".join(overrides), message)
        return None
    return (metrics or {}).get(cfg.get("optimized_metric") or "", None)


__all__ = ["FAILED_FILE", "run_task"]
