"""logger=wandb without a W&B server: offline run files under the run dir, holding the metrics,
config and image grid; one run per multirun job, grouped by the sweep. No network is touched."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from robustxai.utils.wandb import read_offline_run, wandb_key_available, wandb_logger
from tests.conftest import run_cli

SMALL = ["logger=wandb", "debug=limit", "trainer.max_epochs=1", "trainer.accelerator=cpu", "attack.pgd.steps=5",
         "data.test_subset=50"]
TEST_METRICS = ("test/acc", "test/loss", "test/robust_acc/pgd", "test/max_linf/pgd", "test/max_l2/pgd")
AUTH_VARS = ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE", "WANDB_BASE_URL", "NETRC")


class Trap:
    """A local TCP server standing in for the W&B server and for any HTTP(S) proxy: it counts the
    connections it gets and closes them at once, so an attempt fails fast (never hangs) and is seen."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop = True
        self.thread.join()
        self.sock.close()


@pytest.fixture
def trap() -> Iterator[Trap]:
    t = Trap()
    yield t
    t.close()


def offline_env(tmp_path: Path, trap: Trap, mode: str | None) -> dict[str, str]:
    """No credentials (nothing read from this user's ~/.netrc or wandb settings); every W&B or
    HTTP(S) request would go to the trap."""
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS and not k.lower().endswith("_proxy")}
    env.update(HYDRA_FULL_ERROR="1", NETRC=str(tmp_path / "no-netrc"), WANDB_BASE_URL=trap.url,
               WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"), WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"),
               WANDB_DATA_DIR=str(tmp_path / "wandb-data"), NO_PROXY="", no_proxy="",
               **{name: trap.url for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                                              "http_proxy", "https_proxy", "all_proxy")})
    if mode is not None:
        env["WANDB_MODE"] = mode
    return env


def run_isolated(script: str, *overrides: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The CLI with exactly ``env`` (no key, no WANDB_MODE unless the test sets them)."""
    return run_cli(script, *overrides, env=env, inherit_env=False, timeout=240)


def the_offline_run(run_dir: Path) -> dict:
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    assert not list((run_dir / "wandb").glob("run-*")), "an online run was started"
    return read_offline_run(runs[0]) | {"dir": runs[0]}


def check_run_matches_results(run: dict, run_dir: Path) -> None:
    results = json.loads((run_dir / "results.json").read_text())["metrics"]
    for key in TEST_METRICS:
        assert run["summary"][key] == results[key], (key, run["summary"][key], results[key])
    logged = {k for row in run["history"] for k in row}
    assert set(TEST_METRICS) <= logged and {"val/acc", "trainer/global_step"} <= logged
    # the image grid of the attack: logged, and its file is among the run's media files
    grid = run["summary"]["test/examples/pgd"]
    assert grid["_type"] == "images/separated" and grid["count"] == 1
    assert grid["filenames"][0] in run["files"] and grid["filenames"][0].startswith("media/images/")
    assert (run["dir"] / "files" / grid["filenames"][0]).stat().st_size > 0


# -- in-process: choosing offline -----------------------------------------------------------------------
@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    for name in AUTH_VARS:  # set first, so that teardown restores (or removes) what wandb_logger sets
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    return tmp_path / "netrc"


def test_no_key_means_offline(no_credentials, tmp_path):
    assert not wandb_key_available()
    logger = wandb_logger(save_dir=str(tmp_path / "run"), name="x")
    assert logger._wandb_init["mode"] == "offline" and logger._wandb_init["dir"] == str(tmp_path / "run")
    assert "anonymous" not in logger._wandb_init  # wandb 0.31 warns about it on every run
    # process-wide, as wandb reads its global settings (which also gate its telemetry) from the environment
    assert os.environ["WANDB_MODE"] == "offline"


@pytest.mark.parametrize("source", ["env", "netrc", "netrc-custom-host"])
def test_a_key_means_online_unless_wandb_mode_says_offline(no_credentials, monkeypatch, tmp_path, source):
    if source == "env":
        monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    else:
        host = "api.wandb.ai"
        if source == "netrc-custom-host":
            host = "wandb.example.org"
            monkeypatch.setenv("WANDB_BASE_URL", f"https://{host}")
        no_credentials.write_text(f"machine {host}\n  login user\n  password {'x' * 40}\n")
        no_credentials.chmod(0o600)
    assert wandb_key_available()
    assert "mode" not in wandb_logger(save_dir=str(tmp_path))._wandb_init and "WANDB_MODE" not in os.environ
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_logger(save_dir=str(tmp_path))._wandb_init["mode"] == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert "mode" not in wandb_logger(save_dir=str(tmp_path), offline=False)._wandb_init


def test_netrc_entry_for_another_host_is_no_key(no_credentials):
    no_credentials.write_text("machine github.com\n  login user\n  password secret\n")
    no_credentials.chmod(0o600)
    assert not wandb_key_available()


def test_offline_with_log_model_is_refused(no_credentials, tmp_path):
    with pytest.raises(ValueError, match="log_model"):
        wandb_logger(save_dir=str(tmp_path), log_model=True)


READ_BACK = """
import sys, wandb
run = wandb.init(project="p", dir=sys.argv[1], mode="offline", group="g", name="n",
                 config={"big": "x" * 100_000, "nested": {"a": 1}})
for step in range(3000):
    run.log({"loss": step / 7, "acc/top1": step % 11})
run.summary["final"] = 0.125
run.finish()
"""


def test_read_offline_run_across_blocks(tmp_path, trap):
    """Records larger than a 32 KiB block (the config) and many blocks of history come back whole."""
    proc = subprocess.run([sys.executable, "-c", READ_BACK, str(tmp_path)], env=offline_env(tmp_path, trap, "offline"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    run = the_offline_run(tmp_path)
    assert (run["name"], run["group"], run["project"]) == ("n", "g", "p")
    assert run["config"]["big"] == "x" * 100_000 and run["config"]["nested"] == {"a": 1}
    rows = [row for row in run["history"] if "loss" in row]
    assert len(rows) == 3000 and rows[-1]["loss"] == 2999 / 7 and rows[-1]["acc/top1"] == 2999 % 11
    assert run["summary"]["final"] == 0.125 and run["summary"]["loss"] == 2999 / 7
    assert (run["dir"] / f"run-{run['id']}.wandb").stat().st_size > 3 * 32 * 1024
    assert trap.connections == 0


# -- end to end through the command line ----------------------------------------------------------------
def test_train_offline_run_files_hold_metrics_config_and_images(tmp_path, trap):
    run_dir = tmp_path / "run"
    proc = run_isolated("train", *SMALL, "attack=[pgd,topk]", "attack.topk.steps=2", "threat.explanation.ig_steps=4",
                        f"hydra.run.dir={run_dir}", env=offline_env(tmp_path, trap, mode="offline"))
    run = the_offline_run(run_dir)
    check_run_matches_results(run, run_dir)
    topk_grid = run["summary"]["test/examples/topk"]  # the explanation attack's grid goes to W&B too
    assert topk_grid["filenames"][0] in run["files"] and run["summary"]["test/kendall/topk"] <= 1.0
    assert run["project"] == "robustxai" and run["group"] is None
    assert run["name"] and "logger=wandb" in run["name"]  # the job's overrides
    # the resolved config: targets, interpolations filled in (threat model -> attack eps, run dir)
    config = run["config"]
    assert config["method"]["_target_"] == "robustxai.methods.natural.NaturalTraining"
    assert config["attack"]["pgd"]["eps"] == 0.1 and config["data"]["test_subset"] == 50
    assert config["paths"]["output_dir"] == str(run_dir)
    assert "wandb sync" in proc.stdout + proc.stderr
    assert trap.connections == 0


def test_multirun_without_key_or_wandb_mode_is_offline_one_run_per_job(tmp_path, trap):
    sweep = tmp_path / "sweep"
    run_isolated("train", "-m", "method=natural,pgd_at", *SMALL, f"hydra.sweep.dir={sweep}",
        env=offline_env(tmp_path, trap, mode=None))
    runs = [the_offline_run(sweep / job) for job in ("0", "1")]
    for job, run in zip(("0", "1"), runs):
        check_run_matches_results(run, sweep / job)
        assert run["group"] == "sweep"
    assert runs[0]["id"] != runs[1]["id"]
    assert "method=natural" in runs[0]["name"] and "method=pgd_at" in runs[1]["name"]
    assert runs[0]["config"]["method"]["_target_"] == "robustxai.methods.natural.NaturalTraining"
    assert runs[1]["config"]["method"]["_target_"] == "robustxai.methods.pgd_at.PGDAdversarialTraining"
    assert trap.connections == 0
