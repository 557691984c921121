"""Shared fixtures: small deterministic models and inputs, composed configs, CLI runner."""

from __future__ import annotations

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
            check: bool = True) -> subprocess.CompletedProcess:
    """Run ``src/<script>.py`` with Hydra overrides in a subprocess, as a user would."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", **(env or {})}
    proc = subprocess.run([sys.executable, str(ROOT / "src" / f"{script}.py"), *overrides], cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def shared_dataset(name: str) -> Path:
    """The offline copy in ../shared/data, or skip the test when this checkout has none."""
    if not (SHARED_DATA / name).exists():
        pytest.skip(f"{SHARED_DATA / name} not available")
    return SHARED_DATA
