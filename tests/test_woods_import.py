"""The safe importer of the seed's legacy ResNet-44 files: exact loading, clear errors, no code execution."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import pytest
import torch

from robustxai.errors import CheckpointError
from robustxai.models.importers import load_woods_file, load_woods_weights
from robustxai.models.woods_resnet import WoodsResNet, woods_resnet_from_file

PREBUILT = Path(__file__).resolve().parents[2] / "shared" / "models" / "woods-prebuilt"
SHA256 = {"standard": "cdf4b3ba2bb7495f957c8fe01ee3ac4e37ebb24532344ccf4413b19645fa7d21",
          "adv-train": "31f9b73ff60392c917fb61b591c1a75e0ea53c66859b3ced41eefce3b2512852",
          "all": "ff8609712e0cfe96f75b7bac4483d2103b18b86d61c70d51b959bc680b52a55f",
          "robust": "432592630184de6acb35765a2949f46cca8e0ed3f29b7e337e98c8671072ff43"}


def prebuilt(name: str) -> Path:
    path = PREBUILT / f"resnet44-{name}.pt"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256[name]
    return path


@pytest.mark.parametrize("name,activation,keys,batches", [
    ("standard", "relu", 263, 19_600), ("adv-train", "relu", 263, 156_800),
    ("all", "half_huber", 306, 156_800), ("robust", "half_huber", 306, 19_600)])
def test_prebuilt_files_load_strictly(name: str, activation: str, keys: int, batches: int) -> None:
    state, options = load_woods_file(prebuilt(name))
    assert len(state) == keys and int(state["pipe.4.num_batches_tracked"]) == batches
    model = woods_resnet_from_file(prebuilt(name))
    assert model.activation == activation and not model.training
    assert sum(p.numel() for p in model.parameters()) == 681_626
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert options["arch"][2:] == [[7, 7, 7], [16, 32, 64], 10]


def test_robust_integration_reproduces_final_psi() -> None:
    """README 'Final Psi' = 220 exp(0.02 I) from the stored integrator (14240 and 33778)."""
    for name, psi in (("all", 14240), ("robust", 33778)):
        _, options = load_woods_file(prebuilt(name))
        assert int(220 * torch.tensor(0.02 * options["robust_integration"], dtype=torch.float64).exp()) == psi


def test_activation_conflict_and_wrong_architecture_are_clear_errors() -> None:
    with pytest.raises(CheckpointError, match="model.activation=half_huber"):
        load_woods_weights(WoodsResNet("relu"), prebuilt("robust"))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_woods_weights(WoodsResNet(None, num_classes=5), prebuilt("standard"))
    model = WoodsResNet(weights=str(prebuilt("all")))  # activation inferred from the file
    assert model.activation == "half_huber"


def test_missing_and_foreign_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_woods_file(tmp_path / "nope.pt")
    torch.save({"state_dict": {}}, tmp_path / "ours.ckpt")
    with pytest.raises(CheckpointError, match="not a Woods et al. file"):
        load_woods_file(tmp_path / "ours.ckpt")
    (tmp_path / "junk.pt").write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError, match="could not load"):
        load_woods_file(tmp_path / "junk.pt")


class _Payload:
    """Unpickling this object runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("fmt", ["plain_pickle", "legacy_torch", "zip_torch", "payload_in_state"])
def test_malicious_files_are_refused_and_never_executed(tmp_path: Path, fmt: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / f"{fmt}.pt"
    payload = _Payload(marker)
    # the payload works: unpickling it with the unrestricted pickle module would create the marker
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(probe)))
    assert probe.exists()
    if fmt == "plain_pickle":
        path.write_bytes(pickle.dumps({"model_params": payload, "training_options": {}}, protocol=2))
    elif fmt == "legacy_torch":
        torch.save({"model_params": payload, "training_options": {}}, path, _use_new_zipfile_serialization=False)
    elif fmt == "zip_torch":
        torch.save(payload, path)
    else:
        state = WoodsResNet("relu").state_dict()
        torch.save({"model_params": state, "training_options": {"robust_additions": False, "x": payload}}, path)
    with pytest.raises(CheckpointError, match="unsafe|could not load"):
        load_woods_file(path)
    with pytest.raises(CheckpointError):
        WoodsResNet(weights=str(path))
    assert not marker.exists()
