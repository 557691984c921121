"""Shared fixtures: small deterministic models and inputs, composed configs, CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


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
    ``inherit_env`` is false.
    """
    full_env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", **(env or {})} if inherit_env else env
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
