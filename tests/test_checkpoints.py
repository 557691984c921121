"""Checkpoints: atomic writes, weights_only loading (a malicious pickle is refused), wrong architectures."""

from __future__ import annotations

import pickle

import pytest
import torch

from robustxai.errors import CheckpointError
from robustxai.models import MadryCNN, SmallCNN
from robustxai.utils.checkpoint import AtomicCheckpointIO, load_checkpoint, load_model_weights


def test_a_crash_during_a_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, path)

    def crash(obj, f, *args, **kwargs):
        f.write(b"partial garbage")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, path)
    monkeypatch.undo()
    restored = io.load_checkpoint(path)
    assert restored["epoch"] == 1 and torch.equal(restored["state_dict"]["w"], torch.ones(3))


class _Exploit:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['PWNED_FILE'], 'w').write('pwned')",))


def test_a_malicious_pickle_is_refused_and_never_executed(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("PWNED_FILE", str(marker))
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Exploit()}, f)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(path)
    assert not marker.exists()


def test_wrong_architecture_gets_a_clear_error(tmp_path):
    path = tmp_path / "small.ckpt"
    AtomicCheckpointIO().save_checkpoint(
        {"state_dict": {f"model.{k}": v for k, v in SmallCNN().state_dict().items()},
         "robustxai": {"model_class": "robustxai.models.small_cnn.SmallCNN"}}, path)
    with pytest.raises(CheckpointError, match=r"does not fit model MadryCNN.*saved from robustxai.models.small_cnn.SmallCNN"):
        load_model_weights(MadryCNN(), path)
    model = SmallCNN()
    load_model_weights(model, path)


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.ckpt")
