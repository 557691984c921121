"""Real-data runs on MNIST (``make test-slow``; needs DATA_DIR, default ../shared/data)."""

from __future__ import annotations

import os

import pytest

from tests.conftest import results, run_cli, shared_dataset

pytestmark = pytest.mark.slow


def test_natural_madry_cnn_reaches_98_5_percent_in_two_epochs(tmp_path):
    env = {"DATA_DIR": str(shared_dataset("MNIST")), "ROBUSTXAI_CACHE": str(tmp_path / "cache")}
    run_cli("train", "data=mnist", "model=madry_cnn", "method=natural", "trainer.max_epochs=2", "attack=[]",
            f"hydra.run.dir={tmp_path / 'natural'}", env=env, timeout=3600)
    assert results(tmp_path / "natural")["test/acc"] >= 0.985


def test_pgd_at_is_far_more_robust_than_natural(tmp_path):
    env = {"DATA_DIR": str(shared_dataset("MNIST")), "ROBUSTXAI_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    common = ["data=mnist", "model=small_cnn", "trainer.max_epochs=1", "data.test_subset=500", "attack=[pgd]"]
    run_cli("train", *common, "method=natural", f"hydra.run.dir={tmp_path / 'natural'}", env=env, timeout=3600)
    run_cli("train", *common, "method=pgd_at", "method.attack.steps=10", "method.attack.step_size=0.04",
            "method.eps_ramp_steps=500", f"hydra.run.dir={tmp_path / 'pgd_at'}", env=env, timeout=3600)
    natural, robust = results(tmp_path / "natural"), results(tmp_path / "pgd_at")
    assert robust["test/robust_acc/pgd"] > natural["test/robust_acc/pgd"] + 0.5
