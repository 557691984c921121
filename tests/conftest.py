"""Shared fixtures: small deterministic models and inputs, composed configs, CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
os.environ.setdefault("PROJECT_ROOT", str(ROOT))  # as the entry points set it: where conf/ is outside a Hydra app
SHARED_DATA = ROOT.parent / "shared" / "data"


def config_options(group: str) -> list[str]:
    """The option names of a config group (``conf/<group>/*.yaml``), sorted."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_config(config_name: str = "train", overrides: Sequence[str] = (), tmp_path: Path | None = None,
                   return_hydra_config: bool = False) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with command-line ``overrides``, as the entry points do.

    With ``tmp_path``, run outputs (and any data download) go under it, so a test never writes into the
    repository or ``DATA_DIR``.
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)
    if tmp_path is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path)
            cfg.paths.data_dir = str(tmp_path / "data")
    return cfg


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``compose_cfg(config_name, overrides)``: :func:`compose_config` writing under the test's ``tmp_path``."""

    def make(config_name: str = "train", overrides: Sequence[str] = ()) -> DictConfig:
        return compose_config(config_name, overrides, tmp_path)

    return make


def build_everything(cfg: DictConfig) -> dict:
    """Instantiate every component of a composed config without touching any data; returns the built objects."""
    from robustxai.tasks.common import build_attack_callbacks, build_components, build_datamodule, build_model
    from robustxai.utils.config import instantiate, validate_config

    validate_config(cfg)
    built: dict = {"datamodule": build_datamodule(cfg)}
    built["model"] = build_model(cfg, built["datamodule"])
    if "method" in cfg:
        built["method"] = instantiate(cfg.method, "method", model=built["model"])
    built["attack_callbacks"] = build_attack_callbacks(cfg, Path(cfg.paths.output_dir))
    built["callbacks"] = build_components(cfg, "callbacks")
    if "wandb" not in cfg.get("logger", {}):
        built["loggers"] = build_components(cfg, "logger")
    if cfg.trainer.accelerator != "gpu" or torch.cuda.is_available():
        built["trainer"] = instantiate(cfg.trainer, "trainer", logger=False)
    return built


class TinyConvNet(nn.Module):
    """A small deterministic conv net (no BN, no dropout) for oracle comparisons."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, side: int = 12) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(8 * (side // 2) ** 2, 32), nn.Tanh(), nn.Linear(32, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return TinyConvNet().eval()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(16, 1, 12, 12, generator=g), torch.randint(0, 10, (16,), generator=g)


def run_cli(script: str, *overrides: str, env: dict[str, str] | None = None, timeout: int = 600,
            check: bool = True, inherit_env: bool = True) -> subprocess.CompletedProcess:
    """Run ``src/<script>.py`` with Hydra overrides in a subprocess, as a user would.

    ``env`` is added to this process's environment (W&B offline by default), or used alone when
    ``inherit_env`` is false. Training runs skip the gradient-masking checks unless a ``masking`` override is given.
    """
    full_env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", **(env or {})} if inherit_env else env
    if script == "train" and not any(o.lstrip("+~").startswith("masking") for o in overrides):
        overrides = (*overrides, "masking_checks=false")  # the checks are tested in test_masking; keep CLI runs short
    proc = subprocess.run([sys.executable, str(ROOT / "src" / f"{script}.py"), *overrides], cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(overrides)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def results(run_dir: Path) -> dict[str, float]:
    """The metrics a run wrote to ``<run dir>/results.json``."""
    return json.loads((run_dir / "results.json").read_text())["metrics"]


def shared_dataset(name: str) -> Path:
    """The offline copy in ../shared/data, or skip the test when this checkout has none."""
    if not (SHARED_DATA / name).exists():
        pytest.skip(f"{SHARED_DATA / name} not available")
    return SHARED_DATA
