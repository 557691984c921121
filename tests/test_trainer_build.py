"""build_trainer's callback list (val/ monitors dropped only without a validation split); config error wording."""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf

from robustxai.tasks.common import _without_validation_monitors


def _callbacks(tmp_path):
    return [ModelCheckpoint(dirpath=tmp_path, monitor="val/acc", mode="max"), ModelCheckpoint(dirpath=tmp_path)]


def test_val_monitors_dropped_without_validation_split(tmp_path):
    kept = _without_validation_monitors(OmegaConf.create({"data": {"val_size": 0}}), _callbacks(tmp_path))
    assert [cb.monitor for cb in kept] == [None]


def test_val_monitors_kept_with_validation_split(tmp_path):
    kept = _without_validation_monitors(OmegaConf.create({"data": {"val_size": 10}}), _callbacks(tmp_path))
    assert [cb.monitor for cb in kept] == ["val/acc", None]


def test_optional_choice_error_lists_the_choices():
    from typing import Literal, Optional

    from robustxai.utils.config import _describe

    assert _describe(Optional[Literal["relu", "half_huber"]]) == "one of 'relu', 'half_huber' or None"
    assert _describe(int | float) == "int or float"
