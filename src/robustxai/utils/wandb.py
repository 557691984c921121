"""A W&B logger that works without a server: offline unless an API key is configured."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any, Sequence

from lightning.pytorch.loggers import WandbLogger


def wandb_key_available() -> bool:
    """True when W&B can authenticate: ``WANDB_API_KEY`` or a netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _hydra_job_names() -> tuple[str | None, str | None]:
    """(group, name) for the current Hydra job: the sweep directory and the job's overrides."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return None, None
    if hc.mode == RunMode.MULTIRUN:
        return Path(hc.sweep.dir).name, hc.job.override_dirname or f"job{hc.job.num}"
    return None, hc.job.override_dirname or None


def wandb_logger(project: str = "robustxai", save_dir: str = ".", name: str | None = None,
                 group: str | None = None, tags: Sequence[str] = (), offline: bool | None = None,
                 log_model: bool = False, **kwargs: Any) -> WandbLogger:
    """Build a ``WandbLogger``; ``offline=None`` means offline when no key is found or WANDB_MODE=offline."""
    if offline is None:
        offline = os.environ.get("WANDB_MODE") == "offline" or not wandb_key_available()
    sweep_group, job_name = _hydra_job_names()
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(project=project, save_dir=save_dir, name=name or job_name, group=group or sweep_group,
                       tags=list(tags), offline=offline, log_model=log_model, **kwargs)
