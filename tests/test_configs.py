"""Every config file composes and instantiates; bad values are refused with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from robustxai.tasks.common import build_attack_callbacks, build_components, build_datamodule, build_model
from robustxai.errors import ConfigError
from robustxai.utils.config import instantiate, validate_config
from tests.conftest import ROOT, run_cli

CONF = ROOT / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_cfg(config_name: str, overrides: list[str], tmp_path: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.data_dir = str(tmp_path / "data")
    return cfg


def build_everything(cfg: DictConfig) -> None:
    """Instantiate every component of a config without touching any data."""
    validate_config(cfg)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    if "method" in cfg:
        instantiate(cfg.method, "method", model=model)
    build_attack_callbacks(cfg, Path(cfg.paths.output_dir))
    build_components(cfg, "callbacks")
    if "wandb" not in cfg.get("logger", {}):
        build_components(cfg, "logger")
    if cfg.trainer.accelerator != "gpu" or torch.cuda.is_available():
        instantiate(cfg.trainer, "trainer", logger=False)


@pytest.mark.parametrize("override", [f"data={o}" for o in options("data")] + [f"model={o}" for o in options("model")]
                         + [f"method={o}" for o in options("method")]
                         + [f"method/attack={o}" for o in options("method/attack")]
                         + [f"method/optimizer={o}" for o in options("method/optimizer")]
                         + [f"attack=[{','.join(options('attack'))}]"]
                         + [f"callbacks={o}" for o in options("callbacks")]
                         + [f"logger={o}" for o in options("logger")]
                         + [f"trainer={o}" for o in options("trainer")]
                         + [f"debug={o}" for o in options("debug")]
                         + [f"experiment={o}" for o in options("experiment")])
def test_train_config_composes_and_instantiates(override, tmp_path):
    extra = ["method=pgd_at"] if override.startswith("method/attack") else []
    build_everything(compose_cfg("train", [override, *extra], tmp_path))


@pytest.mark.parametrize("threat", options("threat"))
def test_every_threat_model_matches_a_dataset(threat):
    assert threat in options("data")


def test_eval_config_composes(tmp_path):
    cfg = compose_cfg("eval", ["ckpt_path=x.ckpt", "attack=[pgd,fgsm,pgd_l2]"], tmp_path)
    build_everything(cfg)
    assert set(cfg.attack) == {"pgd", "fgsm", "pgd_l2"}


def test_threat_model_follows_the_dataset(tmp_path):
    cfg = compose_cfg("train", ["data=fashion_mnist", "method=pgd_at"], tmp_path)
    assert cfg.method.attack.eps == 0.1 and cfg.attack.pgd.eps == 0.1 and cfg.attack.pgd.steps == 20


@pytest.mark.parametrize("override, key, message", [
    ("method.attack.eps=-0.1", "method.attack", "eps must be >= 0"),
    ("attack.pgd.steps=0", "attack.pgd", "steps must be >= 1"),
    ("attack.pgd.norm=l3", "attack.pgd.norm", "must be one of 'linf', 'l2'"),
    ("+attack.pgd.epsilon=0.1", "attack.pgd.epsilon", "has no argument 'epsilon'"),
    ("data.batch_size=0", "data", "batch_size must be >= 1"),
    ("attack.pgd.steps=ten", "attack.pgd.steps", "must be int"),
    ("data.test_subset=many", "data.test_subset", "must be int or None"),
])
def test_bad_values_are_refused_naming_the_key(override, key, message, tmp_path):
    cfg = compose_cfg("train", ["method=pgd_at", override], tmp_path)
    with pytest.raises(ConfigError) as err:
        build_everything(cfg)
    assert f"`{key}" in str(err.value) and message in str(err.value)


def test_cli_refuses_unknown_method_and_negative_eps_before_work(tmp_path):
    proc = run_cli("train", "method=sgd_magic", f"hydra.run.dir={tmp_path}/a", check=False)
    assert proc.returncode != 0
    assert "Could not find 'method/sgd_magic'" in proc.stderr and "pgd_at" in proc.stderr

    proc = run_cli("train", "method=pgd_at", "method.attack.eps=-0.3", f"hydra.run.dir={tmp_path}/b", check=False)
    assert proc.returncode != 0
    assert "method.attack" in proc.stderr and "eps must be >= 0, got -0.3" in proc.stderr
    assert not (tmp_path / "b" / "checkpoints").exists()  # refused before any training
