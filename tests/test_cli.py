"""End to end through the command line: train then eval, and a training run killed and resumed."""

from __future__ import annotations

import json
import os

import pytest
import torch
import yaml

from tests.conftest import ROOT, results, run_cli

FAST = ["data=digits", "trainer.max_epochs=2", "trainer.accelerator=cpu", "attack.pgd.steps=5"]


def test_train_then_eval_end_to_end(tmp_path):
    train_dir, eval_dir = tmp_path / "train", tmp_path / "eval"
    run_cli("train", *FAST, "method=pgd_at", "method.attack.steps=3", f"hydra.run.dir={train_dir}")
    trained = results(train_dir)
    assert {"train/loss", "val/acc", "test/acc", "test/robust_acc/pgd"} <= set(trained)
    assert (train_dir / "checkpoints" / "last.ckpt").exists() and (train_dir / "images" / "pgd.png").exists()
    assert (train_dir / "csv" / "version_0" / "metrics.csv").exists()

    ckpt = train_dir / "checkpoints" / "last.ckpt"
    run_cli("eval", "data=digits", f"ckpt_path={ckpt}", "attack=[pgd,fgsm,pgd_l2]", "attack.pgd.steps=5",
            "attack.pgd.random_start=false", f"hydra.run.dir={eval_dir}")
    evaluated = results(eval_dir)
    assert evaluated["test/acc"] == trained["test/acc"]  # the same weights on the same test split
    for name in ("pgd", "fgsm", "pgd_l2"):
        assert 0.0 <= evaluated[f"test/robust_acc/{name}"] <= evaluated["test/acc"]
        assert (eval_dir / "images" / f"{name}.png").exists()
    assert evaluated["test/max_linf/pgd"] <= 0.1 + 1e-6 and evaluated["test/max_l2/pgd_l2"] <= 1.0 + 1e-5


def test_eval_takes_data_threat_and_model_from_the_training_run(tmp_path):
    run_cli("train", *FAST, "model=madry_cnn", "data.val_size=100", "threat.linf.eps=0.05", "trainer.max_epochs=1",
            "test=false", f"hydra.run.dir={tmp_path / 'train'}")
    eval_dir = tmp_path / "eval"
    run_cli("eval", f"ckpt_path={tmp_path / 'train' / 'checkpoints' / 'last.ckpt'}", "data.test_subset=40",
            "attack.pgd.steps=2", f"hydra.run.dir={eval_dir}")
    report = json.loads((eval_dir / "results.json").read_text())
    assert report["from_training_run"] == ["data", "threat", "model"]
    used = yaml.safe_load((eval_dir / "config.yaml").read_text())
    assert used["model"]["_target_"] == "robustxai.models.madry_cnn.MadryCNN" and used["data"]["val_size"] == 100
    assert used["data"]["test_subset"] == 40 and used["attack"]["pgd"]["eps"] == 0.05  # overrides on top
    assert report["metrics"]["test/max_linf/pgd"] <= 0.05 + 1e-6


def test_eval_of_a_checkpoint_with_the_wrong_architecture_is_refused(tmp_path):
    run_cli("train", *FAST, "trainer.max_epochs=1", "test=false", f"hydra.run.dir={tmp_path / 'train'}")
    proc = run_cli("eval", "model=madry_cnn", f"ckpt_path={tmp_path / 'train' / 'checkpoints' / 'last.ckpt'}",
                   f"hydra.run.dir={tmp_path / 'eval'}", check=False)
    assert proc.returncode != 0
    assert "does not fit model MadryCNN" in proc.stderr and "SmallCNN" in proc.stderr


@pytest.mark.parametrize("every_n_steps", [None, 5], ids=["epoch-end checkpoint", "mid-epoch checkpoint"])
def test_killed_run_resumes_to_the_same_result(tmp_path, every_n_steps):
    args = ["data=digits", "method=pgd_at", "method.attack.steps=2", "trainer.max_epochs=4",
            "trainer.accelerator=cpu", "attack.pgd.steps=3", "data.batch_size=128", "seed=3"]
    if every_n_steps:
        args.append(f"+callbacks.last_checkpoint.every_n_train_steps={every_n_steps}")
    env = {"PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run_cli("train", *args, f"hydra.run.dir={tmp_path / 'whole'}")

    killed = tmp_path / "killed"
    # 11 steps per epoch: die in the middle of the third epoch (steps 23-33)
    proc = run_cli("train", *args, f"hydra.run.dir={killed}", "+callbacks.killer._target_=tests.helpers.KillAtStep",
                   "+callbacks.killer.step=27", env=env, check=False)
    assert proc.returncode == -9 and not (killed / "results.json").exists()
    saved = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == (25 if every_n_steps else 22)
    run_cli("train", *args, f"hydra.run.dir={killed}", "ckpt_path=last")

    assert results(killed) == results(tmp_path / "whole")
    if not every_n_steps:  # both runs' last checkpoints are then taken after the final epoch
        whole = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        resumed = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        assert all(torch.equal(whole[k], resumed[k]) for k in whole)
