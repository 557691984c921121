"""Scale-out through the command line: 2-process DDP on CPU (gloo) and the Hydra launchers.

Every run is a subprocess of src/train.py or src/eval.py with small settings; all output goes under
tmp_path (``paths.log_dir`` too, so a process that picked its own run directory would show up).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from tests.conftest import ROOT, compose_config, results, run_cli

SMALL = ["debug=limit", "trainer.accelerator=cpu", "attack.pgd.steps=5"]
TEST_SUBSET = 101  # odd: 2 ranks get 51 + 50 examples, any padding or duplication would change the metrics


def run(script: str, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return run_cli(script, *overrides, env={"HYDRA_FULL_ERROR": "1"}, timeout=timeout)


def entries(path: Path) -> set[str]:
    return {p.name for p in path.iterdir()}


# -- DDP on 2 CPU processes -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> dict[str, Path]:
    """Train with trainer=ddp_cpu, then evaluate its checkpoint with 1 and with 2 processes."""
    base = tmp_path_factory.mktemp("ddp")
    logs = base / "logs"  # default run dirs would land here: the test checks that none does
    dirs = {"train": base / "train", "eval1": base / "eval1", "eval2": base / "eval2"}
    run("train", *SMALL, "trainer=ddp_cpu", "trainer.max_epochs=2", f"data.test_subset={TEST_SUBSET}",
        f"paths.log_dir={logs}", f"hydra.run.dir={dirs['train']}")
    evaluation = [*SMALL, f"ckpt_path={dirs['train'] / 'checkpoints' / 'last.ckpt'}", f"data.test_subset={TEST_SUBSET}",
                  "attack.pgd.random_start=false", f"paths.log_dir={logs}"]
    run("eval", *evaluation, f"hydra.run.dir={dirs['eval1']}")
    run("eval", *evaluation, "trainer=ddp_cpu", f"hydra.run.dir={dirs['eval2']}")
    dirs["logs"] = logs
    return dirs


def test_ddp_cpu_training_runs_both_ranks_in_one_run_dir(ddp_runs):
    train_dir = ddp_runs["train"]
    trained = results(train_dir)
    assert {"train/loss", "val/acc", "test/acc", "test/robust_acc/pgd"} <= set(trained)
    assert 0.0 <= trained["test/robust_acc/pgd"] <= trained["test/acc"] <= 1.0
    assert (train_dir / "checkpoints" / "last.ckpt").exists()
    hparams = (train_dir / ".hydra" / "config.yaml").read_text()
    assert "ddp" in hparams and "devices: 2" in hparams
    # rank 1 is Lightning's re-run of the script, pointed at the same run dir (its own log file there)
    assert (train_dir / "train.log").exists() and (train_dir / "train_ddp_process_1.log").exists()
    assert not ddp_runs["logs"].exists(), "a rank wrote to a run directory of its own"
    assert not list(train_dir.glob("*.tmp")) and not list(train_dir.glob("**/*.json.tmp"))


def test_ddp_eval_gives_exactly_the_single_process_numbers(ddp_runs):
    single, ddp = results(ddp_runs["eval1"]), results(ddp_runs["eval2"])
    for key in ("test/acc", "test/robust_acc/pgd", "test/max_linf/pgd", "test/max_l2/pgd"):
        assert ddp[key] == single[key], (key, ddp[key], single[key])
    # the mean is over exactly 101 examples (no padded or repeated example): a count / 101
    for key in ("test/acc", "test/robust_acc/pgd"):
        count = ddp[key] * TEST_SUBSET
        assert abs(count - round(count)) < 1e-4, (key, ddp[key])
    eval_dir = ddp_runs["eval2"]
    assert (eval_dir / "train_ddp_process_1.log").exists() and (eval_dir / "images" / "pgd.png").exists()
    result = json.loads((eval_dir / "results.json").read_text())
    assert result["task"] == "eval" and result["checkpoint"].endswith("last.ckpt")
    assert not ddp_runs["logs"].exists()


def test_ddp_eval_loss_matches_single_process(ddp_runs):
    single, ddp = results(ddp_runs["eval1"]), results(ddp_runs["eval2"])
    assert ddp["test/loss"] == pytest.approx(single["test/loss"], rel=1e-5)


def test_ddp_in_a_multirun_keeps_each_rank_in_its_job_dir(tmp_path):
    logs = tmp_path / "logs"  # the default, timestamped sweep dir: a rank that starts its own multirun shows
    proc = run("train", "-m", "trainer=ddp_cpu", "seed=0,1", "trainer.max_epochs=1", *SMALL, "data.test_subset=50",
               f"paths.log_dir={logs}")
    sweeps = list((logs / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1, sweeps
    for job in ("0", "1"):
        assert (sweeps[0] / job / "results.json").exists() and (sweeps[0] / job / "train_ddp_process_1.log").exists()
    assert proc.stdout.count("Comparison of the jobs") == 1


# -- Hydra launchers --------------------------------------------------------------------------------
def check_sweep(sweep: Path, labels: list[str]) -> None:
    """Both jobs finished in <sweep>/<n>/ and the comparison table lists them with their metrics."""
    assert {"0", "1", "multirun.yaml", "comparison.md", "comparison.csv"} <= entries(sweep)
    with open(sweep / "comparison.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["job"] for row in rows] == ["0", "1"]
    for row, label in zip(rows, labels):
        assert label in row["overrides"]
        job = results(sweep / row["job"])
        assert float(row["test/acc"]) == job["test/acc"]
        assert float(row["test/robust_acc/pgd"]) == job["test/robust_acc/pgd"]
    markdown = (sweep / "comparison.md").read_text()
    assert markdown.startswith("| job | overrides | NA test/acc | AA test/robust_acc/pgd")
    assert all(label in markdown for label in labels)


def test_basic_launcher_multirun_and_comparison_table(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run("train", "-m", "method=natural,pgd_at", "trainer.max_epochs=1", *SMALL,
               "data.test_subset=50", f"paths.log_dir={tmp_path / 'logs'}", f"hydra.sweep.dir={sweep}")
    check_sweep(sweep, ["method=natural", "method=pgd_at"])
    assert "Comparison of the jobs" in proc.stdout
    configs = [OmegaConf.load(sweep / n / "config.yaml") for n in ("0", "1")]
    assert [c.method._target_.rsplit(".", 1)[1] for c in configs] == ["NaturalTraining", "PGDAdversarialTraining"]
    assert not (tmp_path / "logs").exists()


def test_submitit_local_launcher_runs_both_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    run("train", "-m", "hydra/launcher=local", "seed=0,1", "trainer.max_epochs=1", *SMALL, "data.test_subset=50",
        f"paths.log_dir={tmp_path / 'logs'}", f"hydra.sweep.dir={sweep}")
    check_sweep(sweep, ["seed=0", "seed=1"])
    assert (sweep / ".submitit").is_dir()  # the jobs really went through submitit
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2
    assert OmegaConf.load(sweep / "1" / "config.yaml").seed == 1


def compose_hydra(*overrides: str):
    return compose_config("train", overrides, return_hydra_config=True)


def test_joblib_launcher_config_composes():
    cfg = compose_hydra("hydra/launcher=joblib_local", "hydra.sweep.dir=/tmp/sweep")
    assert cfg.hydra.launcher.n_jobs == 2 and cfg.hydra.launcher.prefer == "processes"
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "JoblibLauncher"
    assert launcher.joblib["n_jobs"] == 2


def test_local_launcher_config_composes():
    cfg = compose_hydra("hydra/launcher=local", "hydra.sweep.dir=/tmp/sweep")
    assert get_class(cfg.hydra.launcher._target_).__name__ == "LocalLauncher"
    assert cfg.hydra.launcher.submitit_folder == "/tmp/sweep/.submitit/%j"
    assert cfg.hydra.launcher.gpus_per_node == 0


@pytest.mark.parametrize("cli", [False, True])
def test_slurm_launcher_config_composes_into_an_sbatch_script(tmp_path, monkeypatch, cli):
    """Without a cluster: the launcher's parameters are accepted by submitit and rendered as #SBATCH lines."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    sweep = tmp_path / "sweep"
    overrides = ["hydra/launcher=slurm", f"hydra.sweep.dir={sweep}", "hydra.launcher.partition=gpu",
                 "hydra.launcher.account=lab"]
    if cli:  # the command line a user would type to check it
        proc = subprocess.run([sys.executable, str(ROOT / "src" / "train.py"), *overrides, "--cfg", "hydra",
                               "-p", "hydra.launcher"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        launcher_cfg = OmegaConf.create(proc.stdout)
        assert launcher_cfg._target_.endswith("SlurmLauncher") and launcher_cfg.partition == "gpu"
        return
    cfg = compose_hydra(*overrides)
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    params = launcher.params
    # the executor is built as hydra_plugins.hydra_submitit_launcher builds it in launch(); submitit only
    # checks that `srun` exists, so a stub stands in for it
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    executor = submitit.AutoExecutor(folder=params["submitit_folder"], cluster="slurm",
                                     slurm_max_num_timeout=params["max_num_timeout"])
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()
                                  if k not in {"submitit_folder", "max_num_timeout"}})
    script = executor._executor._make_submission_file_text("python -u -m submitit.core._submit X", "uid")
    for line in ("--partition=gpu", "--account=lab", "--gpus-per-node=1", "--ntasks-per-node=1",
                 "--cpus-per-task=8", "--time=240", "--mem=32GB", f"--output={sweep}/.submitit/%j/"):
        assert f"#SBATCH {line}" in script, (line, script)
