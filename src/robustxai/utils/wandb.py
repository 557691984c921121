"""A W&B logger that works without a server: offline unless an API key is configured.

Offline runs are written to ``<save_dir>/wandb/offline-run-<time>-<id>/`` (``wandb sync`` uploads
them later). :func:`read_offline_run` reads such a run back (config, summary, history), e.g. to
check what was logged without a W&B server.
"""

from __future__ import annotations

import json
import netrc
import os
import platform
import struct
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence
from urllib.parse import urlsplit

from lightning.pytorch.loggers import WandbLogger

DEFAULT_BASE_URL = "https://api.wandb.ai"
OFFLINE_MODES = ("offline", "dryrun")


def _netrc_path() -> Path:
    """The netrc file W&B reads: ``$NETRC``, else ``~/.netrc`` or ``~/_netrc``."""
    if os.environ.get("NETRC"):
        return Path(os.environ["NETRC"]).expanduser()
    unix, windows = Path("~/.netrc").expanduser(), Path("~/_netrc").expanduser()
    if unix.exists():
        return unix
    if windows.exists():
        return windows
    return windows if platform.system() == "Windows" else unix


def wandb_key_available() -> bool:
    """True when W&B can authenticate: ``WANDB_API_KEY``, an identity token file, or a netrc
    entry for the W&B host (``WANDB_BASE_URL``, default api.wandb.ai)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).netloc
    if not host:
        return False
    try:
        creds = netrc.netrc(str(_netrc_path())).authenticators(host)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(creds and creds[2])


def _hydra_job_names() -> tuple[str | None, str | None]:
    """(group, name) for the current Hydra job: the sweep directory's name (multirun only) and the
    job's overrides (else the job number in a multirun, the task's name in a single run)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return None, None
    if hc.mode == RunMode.MULTIRUN:
        return Path(hc.sweep.dir).name, hc.job.override_dirname or f"job{hc.job.num}"
    return None, hc.job.override_dirname or hc.job.name or None


def wandb_logger(project: str = "robustxai", save_dir: str = ".", name: str | None = None,
                 group: str | None = None, tags: Sequence[str] = (), offline: bool | None = None,
                 log_model: bool = False, **kwargs: Any) -> WandbLogger:
    """Build a ``WandbLogger``; ``offline=None`` means offline when WANDB_MODE=offline or no key is found.

    Offline also sets ``WANDB_MODE=offline`` for this process (as Lightning's own ``offline`` flag sets
    ``dryrun``): wandb reads its process-wide settings from the environment once, and those decide more
    than the run's mode: with them online, wandb 0.31 still posts its usage telemetry to
    ``<WANDB_BASE_URL>/sdk/otel/v1/metrics`` from an offline run.
    """
    if offline is None:
        offline = os.environ.get("WANDB_MODE", "").lower() in OFFLINE_MODES or not wandb_key_available()
    if offline and log_model:
        raise ValueError("logger.wandb.log_model needs W&B online (an API key); "
                         "offline runs cannot upload checkpoints: set logger.wandb.log_model=false")
    if offline:
        os.environ["WANDB_MODE"] = "offline"
        kwargs["mode"] = "offline"
    sweep_group, job_name = _hydra_job_names()
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    logger = WandbLogger(project=project, save_dir=save_dir, name=name or job_name, group=group or sweep_group,
                         tags=list(tags), log_model=log_model, **kwargs)
    if getattr(logger, "_wandb_init", {}).get("anonymous", 0) is None:
        del logger._wandb_init["anonymous"]  # Lightning always passes it; wandb 0.31 warns it has no effect
    return logger


# -- reading offline runs back --------------------------------------------------------------------
_BLOCK = 32 * 1024          # the .wandb file is a LevelDB-style log: 32 KiB blocks of records
# record header: CRC-32 of type + payload, payload length, record type (1 full, 2 first, 3 middle, 4 last)
_HEADER = struct.Struct("<IHB")


def _iter_records(path: Path) -> Iterator[Any]:
    """Yield the protobuf ``Record`` messages of a ``run-<id>.wandb`` file."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    pos, chunks = 7, b""
    while pos + _HEADER.size <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER.size:     # block trailer: zero padding
            pos += left
            continue
        checksum, length, kind = _HEADER.unpack_from(data, pos)
        payload = data[pos + _HEADER.size: pos + _HEADER.size + length]
        pos += _HEADER.size + length
        if kind == 0:               # padding / preallocated space
            continue
        if len(payload) < length or zlib.crc32(bytes([kind]) + payload) != checksum:
            return                  # a run still being written, or cut short: keep what was complete
        chunks = payload if kind in (1, 2) else chunks + payload
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def _put(target: dict[str, Any], item: Any) -> None:
    keys = list(item.nested_key) or [item.key]
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = json.loads(item.value_json)


def read_offline_run(run_dir: str | Path) -> dict[str, Any]:
    """Read an offline run directory (``.../wandb/offline-run-*``) or its ``.wandb`` file.

    Returns ``{"id", "name", "group", "project", "config", "summary", "history", "files"}``:
    the config and the final summary as dicts (metrics under their logged keys, e.g.
    ``summary["test/acc"]``), the history as a list of logged rows, and the run's files on disk
    (relative to ``files/``, e.g. ``media/images/...png``).
    """
    run_dir = Path(run_dir)
    path = run_dir if run_dir.is_file() else next(run_dir.glob("run-*.wandb"))
    run: dict[str, Any] = {"id": None, "name": None, "group": None, "project": None,
                           "config": {}, "summary": {}, "history": []}
    for record in _iter_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(id=record.run.run_id, name=record.run.display_name or None,
                       group=record.run.run_group or None, project=record.run.project or None)
            for item in record.run.config.update:
                _put(run["config"], item)
        elif kind == "config":
            for item in record.config.update:
                _put(run["config"], item)
        elif kind == "summary":
            for item in record.summary.update:
                _put(run["summary"], item)
            for item in record.summary.remove:
                run["summary"].pop(item.key, None)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _put(row, item)
            run["history"].append(row)
    run["config"].pop("_wandb", None)
    files = path.parent / "files"
    run["files"] = sorted(str(p.relative_to(files)) for p in files.rglob("*") if p.is_file()) if files.is_dir() else []
    return run


def log_image_files(loggers: Iterable[Any], key: str, paths: Sequence[str | Path],
                    captions: Sequence[str] | None = None) -> None:
    """Send saved image files to every W&B logger among ``loggers`` (other loggers keep the files on disk)."""
    from lightning.pytorch.loggers import WandbLogger

    if not paths:
        return
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            kwargs = {"caption": list(captions)} if captions is not None else {}
            logger.log_image(key=key, images=[str(p) for p in paths], **kwargs)
