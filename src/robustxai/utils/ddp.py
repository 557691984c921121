"""Lightning's DDP script launcher inside Hydra multiruns.

For ``strategy=ddp`` Lightning starts ranks 1.. by re-running the command line with
``hydra.run.dir=<run dir>``. In a multirun that command is the whole sweep (``-m a=1,2``): each
extra rank runs every job of the sweep itself, in its own sweep directory when that holds
``${now:}`` (rank 1 of a job then logs to a different directory), and also writes the comparison
table; under job launchers (submitit, joblib) the command line is the launcher's worker and the extra
ranks fail. :func:`install` makes the extra ranks run exactly the current job, in its directory, and
:func:`job_scope` lets the next job of the multirun start its own ranks.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator, Sequence

_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
_CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
_SWEEP_ONLY = ("hydra.mode", "hydra.sweep", "hydra.launcher", "hydra/launcher", "hydra.sweeper", "hydra/sweeper",
               "hydra.run.dir", "hydra.job.name", "hydra.output_subdir", "hydra.callbacks")


def _config_flags(argv: Sequence[str]) -> list[str]:
    """The -cp/-cn/-cd options of a command line (``-cn x`` and ``--config-name=x`` forms)."""
    out, args = [], iter(argv)
    for arg in args:
        if arg.split("=", 1)[0] in _CONFIG_FLAGS:
            out.append(arg)
            if "=" not in arg:
                out.append(next(args, ""))
    return out


def hydra_subprocess_cmd(local_rank: int) -> tuple[Sequence[str], str]:
    """The command that starts DDP rank ``local_rank``: the current Hydra job alone, in its run directory."""
    import __main__
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from hydra.utils import get_original_cwd, to_absolute_path

    hc = HydraConfig.get()
    if __main__.__spec__ is None:
        command = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    if hc.mode != RunMode.MULTIRUN:
        command += sys.argv[1:]
    elif "-m" in sys.argv[1:] or "--multirun" in sys.argv[1:]:   # the basic launcher: jobs run in this process
        hydra_overrides = [o for o in hc.overrides.hydra if not o.lstrip("+~").startswith(_SWEEP_ONLY)]
        command += [*_config_flags(sys.argv[1:]), *hydra_overrides, *hc.overrides.task]
    else:
        raise RuntimeError(
            "DDP (trainer=ddp/ddp_cpu) starts its extra processes by re-running the command line, "
            f"which a job launched by {hc.launcher._target_.rsplit('.', 1)[-1]} does not have. Run DDP sweeps "
            "with the basic launcher (no hydra/launcher=...), or on SLURM with hydra/launcher=slurm and "
            "hydra.launcher.tasks_per_node=<trainer.devices> (SLURM then starts one process per rank).")
    command += [f'hydra.run.dir="{hc.runtime.output_dir}"', f"hydra.job.name=train_ddp_process_{local_rank}",
                "hydra.output_subdir=null"]
    return command, get_original_cwd()


def install() -> None:
    """Use :func:`hydra_subprocess_cmd` for Lightning's DDP script launcher (idempotent)."""
    from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
    from lightning.pytorch.strategies.launchers import subprocess_script as trainer_launcher

    fabric_launcher._hydra_subprocess_cmd = hydra_subprocess_cmd
    trainer_launcher._hydra_subprocess_cmd = hydra_subprocess_cmd  # imported by name there


@contextmanager
def job_scope() -> Iterator[None]:
    """After a job: close its process group and drop the launch variables Lightning set for it, so the
    next job of a multirun (same process) launches its own ranks instead of waiting for old ones."""
    before = {name: os.environ.get(name) for name in _LAUNCH_ENV}
    try:
        yield
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
