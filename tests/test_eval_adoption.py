"""src/eval.py adopts the training run's threat model and fills in keys added to its file since."""

from __future__ import annotations

from omegaconf import OmegaConf

from robustxai.tasks.evaluate import _fill_new_threat_keys
from tests.conftest import CONF as CONF_DIR


def _run_dir(tmp_path, choice):
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": {"threat": choice}}}}),
                   tmp_path / ".hydra" / "hydra.yaml")
    return tmp_path


def test_new_keys_come_from_the_current_file_and_trained_values_win(tmp_path):
    trained = OmegaConf.create({"linf": {"eps": 0.25, "step_size": 0.01, "steps": 7}})
    merged = _fill_new_threat_keys(trained, _run_dir(tmp_path, "mnist"))
    current = OmegaConf.load(CONF_DIR / "threat" / "mnist.yaml")
    assert merged.linf.eps == 0.25 and merged.linf.steps == 7
    assert merged.explanation == current.explanation
    assert merged.l2 == current.l2


def test_unknown_choice_or_missing_hydra_file_keeps_the_trained_node(tmp_path):
    trained = OmegaConf.create({"linf": {"eps": 0.25}})
    assert _fill_new_threat_keys(trained, tmp_path) == trained
    assert _fill_new_threat_keys(trained, _run_dir(tmp_path, "no_such_dataset")) == trained
