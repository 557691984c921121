"""DataModule seams (take, split_size, model_kwargs, build_model) and the streaming base's loader guarantees."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from robustxai.data.base import DataModule, TensorDataModule, TensorLoader
from robustxai.data.order import EpochCursor, epoch_order, shard_length
from robustxai.data.streaming import (
    StreamingDataModule,
    StreamingDataset,
    StreamingLoader,
    sample_seed,
)
from robustxai.tasks.common import build_model

N_TRAIN, N_TEST = 23, 11


def _images(n: int, offset: int = 0) -> Tensor:
    """uint8 images whose every pixel is the example's number (mod 256), so an image names its index."""
    return (torch.arange(offset, offset + n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).clone()


def _labels(n: int, offset: int = 0) -> Tensor:
    return torch.arange(offset, offset + n)


class TinyTensorData(TensorDataModule):
    num_classes, input_shape = 10, (3, 4, 4)

    def load(self, train: bool) -> tuple[Tensor, Tensor]:
        return (_images(N_TRAIN), _labels(N_TRAIN)) if train else (_images(N_TEST, 100), _labels(N_TEST, 100))


class TensorDataset(StreamingDataset):
    """A streaming dataset over tensors; with a generator, adds noise drawn from it (a 'random transform')."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def get(self, index: int, generator: torch.Generator | None) -> tuple[Tensor, int]:
        image = self.images[index]
        if generator is not None:
            return image.float() / 255 + torch.rand(image.shape, generator=generator), int(self.labels[index])
        return image, int(self.labels[index])


class TinyStreamingData(StreamingDataModule):
    num_classes, input_shape = 10, (3, 4, 4)

    def dataset(self, train: bool) -> TensorDataset:
        return TensorDataset(_images(N_TRAIN), _labels(N_TRAIN)) if train else \
            TensorDataset(_images(N_TEST, 100), _labels(N_TEST, 100))


# -- take / split_size -------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [TinyTensorData, TinyStreamingData], ids=["tensor", "streaming"])
def test_take_returns_the_asked_examples_in_order_in_the_unit_box(cls):
    dm = cls(val_size=5, test_subset=7, num_workers=0) if cls is TinyStreamingData else cls(val_size=5, test_subset=7)
    assert (dm.split_size("train"), dm.split_size("val"), dm.split_size("test")) == (18, 5, 7)  # loads on demand
    for indices in ([4, 0, 2], torch.tensor([4, 0, 2]), range(4, -1, -2)):
        x, y = dm.take("train", indices)
        expected = [5 + i for i in ([4, 0, 2] if not isinstance(indices, range) else [4, 2, 0])]
        assert y.tolist() == expected and y.dtype == torch.int64
        assert x.dtype == torch.float32 and torch.equal(x[:, 0, 0, 0] * 255, torch.tensor(expected, dtype=torch.float32))
    assert dm.take("val", [4])[1].tolist() == [4]                  # val = the first val_size training examples
    assert dm.take("test", 6)[1].tolist() == [106]                 # an int gives a batch of one
    assert dm.take("test", [])[0].shape == (0, 3, 4, 4)


@pytest.mark.parametrize("cls", [TinyTensorData, TinyStreamingData], ids=["tensor", "streaming"])
def test_take_names_a_bad_split_or_index(cls):
    dm = cls(test_subset=7)
    with pytest.raises(ValueError, match="unknown split 'eval'.*'train', 'val', 'test'"):
        dm.take("eval", [0])
    with pytest.raises(ValueError, match=r"index 7 is out of range; the test split has 7 examples \(indices 0..6\)"):
        dm.take("test", [0, 7])
    with pytest.raises(ValueError, match="index -1 is out of range"):
        dm.take("test", [-1])
    with pytest.raises(ValueError, match="integer indices"):
        dm.take("test", torch.tensor([0.0]))
    with pytest.raises(ValueError, match="val_size=30 leaves no training images"):
        cls(val_size=30).take("train", [0])


def test_take_equals_the_tensors_the_loader_serves():
    dm = TinyTensorData()
    x, y = dm.take("test", range(N_TEST))
    dm.setup("test")
    served = next(iter(dm.test_dataloader()))
    assert torch.equal(x, served[0]) and torch.equal(y, served[1])


# -- model_kwargs / build_model ----------------------------------------------------------------------
class Shaped(TensorDataModule):
    num_classes = 4

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.input_shape = shape

    def load(self, train: bool) -> tuple[Tensor, Tensor]:
        raise AssertionError("model_kwargs must not load data")


class TinyMLP(nn.Module):
    def __init__(self, in_features: int = 1, num_classes: int = 2, hidden: int = 3) -> None:
        super().__init__()
        self.in_features, self.num_classes = in_features, num_classes
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def test_model_kwargs_follow_the_data_shape():
    assert Shaped((3, 32, 32)).model_kwargs() == {"in_channels": 3, "num_classes": 4, "input_size": 32}
    assert Shaped((1, 20, 28)).model_kwargs() == {"in_channels": 1, "num_classes": 4, "input_size": (20, 28)}
    assert Shaped((2,)).model_kwargs() == {"in_features": 2, "num_classes": 4}
    with pytest.raises(ValueError, match=r"input_shape=\(2, 3\) is neither.*override model_kwargs"):
        Shaped((2, 3)).model_kwargs()


def test_build_model_passes_the_arguments_the_model_takes_and_config_wins():
    cnn = build_model(OmegaConf.create({"model": {"_target_": "robustxai.models.small_cnn.SmallCNN"}}),
                      Shaped((3, 16, 16)))
    assert cnn(torch.zeros(2, 3, 16, 16)).shape == (2, 4)
    cfg = OmegaConf.create({"model": {"_target_": "tests.test_data_seams.TinyMLP", "num_classes": 3}})
    mlp = build_model(cfg, Shaped((2,)))  # 2-D points: in_features, no input_size; the config's num_classes wins
    assert (mlp.in_features, mlp.num_classes) == (2, 3)


# -- the shared order, and streaming == tensor loaders -------------------------------------------------
def test_epoch_order_is_a_seeded_permutation_sharded_by_rank():
    assert torch.equal(epoch_order(10, True, 3, 2), epoch_order(10, True, 3, 2))
    assert not torch.equal(epoch_order(10, True, 3, 2), epoch_order(10, True, 3, 1))
    assert torch.equal(epoch_order(10, True, 3, 2), torch.randperm(10, generator=torch.Generator().manual_seed(5)))
    assert epoch_order(5, False, 0, 0).tolist() == [0, 1, 2, 3, 4]
    shards = [epoch_order(11, True, 0, 0, rank=r, world_size=3, equal_shards=False) for r in range(3)]
    assert sorted(torch.cat(shards).tolist()) == list(range(11)) and [len(s) for s in shards] == [4, 4, 3]
    assert [shard_length(11, r, 3, False) for r in range(3)] == [4, 4, 3] and shard_length(11, 2, 3, True) == 3


def _pair(n: int, **kwargs) -> tuple[TensorLoader, StreamingLoader]:
    images, labels = _images(n), _labels(n)
    return (TensorLoader(images, labels, **kwargs),
            StreamingLoader(TensorDataset(images, labels), range(n), **kwargs))


@pytest.mark.parametrize("kwargs", [dict(shuffle=False), dict(shuffle=True, seed=4),
                                    dict(shuffle=True, rank=1, world_size=3, equal_shards=True),
                                    dict(shuffle=False, rank=2, world_size=3)],
                         ids=["ordered", "shuffled", "train-shard", "eval-shard"])
def test_streaming_loader_serves_the_tensor_loaders_batches(kwargs):
    tensor, streaming = _pair(N_TRAIN, batch_size=4, **kwargs)
    a, b = list(tensor), list(streaming)
    assert len(a) == len(b) == len(tensor) == len(streaming)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


def test_streaming_order_depends_only_on_seed_and_epoch_and_workers_change_nothing():
    epoch = {"n": 0}
    make = lambda workers: StreamingLoader(TensorDataset(_images(N_TRAIN), _labels(N_TRAIN)), range(N_TRAIN),
                                           batch_size=5, shuffle=True, seed=9, epoch_fn=lambda: epoch["n"],
                                           num_workers=workers, random_transforms=True)
    state = torch.get_rng_state()
    serial, parallel = make(0), make(2)
    first = [(x, y) for x, y in parallel]
    again = [(x, y) for x, y in parallel]  # the persistent workers serve the same epoch again
    assert torch.equal(torch.get_rng_state(), state)  # no global RNG draw, so training randomness is unaffected
    same = [(x, y) for x, y in serial]
    epoch["n"] = 1
    second = [(x, y) for x, y in parallel]
    for other in (again, same):
        assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(first, other))
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in second]))
    assert sorted(torch.cat([y for _, y in first]).tolist()) == list(range(N_TRAIN))


def test_random_transforms_are_seeded_by_seed_epoch_and_example():
    loader = StreamingLoader(TensorDataset(_images(6), _labels(6)), range(6), batch_size=6, shuffle=True, seed=2,
                             random_transforms=True)
    x, y = next(iter(loader))
    for image, label in zip(x, y.tolist()):
        noise = torch.rand((3, 4, 4), generator=torch.Generator().manual_seed(sample_seed(2, 0, label)))
        assert torch.equal(image, _images(6)[label].float() / 255 + noise)


@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_loader_resumes_mid_epoch_at_the_next_batch(workers):
    epoch = {"n": 2}
    make = lambda: StreamingLoader(TensorDataset(_images(10), _labels(10)), range(10), batch_size=3, shuffle=True,
                                   seed=1, epoch_fn=lambda: epoch["n"], num_workers=workers, random_transforms=True)
    loader = make()
    full = list(loader)
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches": 2}
    fresh = make()
    fresh.load_state_dict(state)
    rest = list(fresh)
    assert len(rest) == 2 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(rest, full[2:]))
    assert fresh.state_dict() == {"epoch": 2, "batches": 4}
    assert len(list(fresh)) == 4  # the skip applies to the resumed pass only


def test_cursor_skips_only_a_pass_over_the_saved_epoch():
    cursor = EpochCursor()
    cursor.load_state_dict({"epoch": 3, "batches": 2})
    assert cursor.begin(4) == 0 and cursor.begin(3) == 0  # another epoch drops the saved position
    cursor.load_state_dict({"epoch": 3, "batches": 2})
    assert cursor.begin(3) == 2 and cursor.state_dict() == {"epoch": 3, "batches": 2}


# -- the streaming DataModule in a Lightning run -------------------------------------------------------
class Recorder(L.LightningModule):
    """Records the labels of every training batch; a linear model so that fitting takes milliseconds."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Linear(48, 10)
        self.seen: list[list[int]] = []

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        self.seen.append(y.tolist())
        return nn.functional.cross_entropy(self.model(x.flatten(1)), y % 10)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, max_epochs=2, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path, **kwargs)


def test_a_mid_epoch_checkpoint_resumes_the_streaming_loader_at_the_next_batch(tmp_path):
    data = lambda: TinyStreamingData(batch_size=4, shuffle_seed=5, num_workers=0)
    whole = Recorder()
    _trainer(tmp_path / "whole", enable_checkpointing=False).fit(whole, data())
    assert len(whole.seen) == 12 and whole.seen[:6] != whole.seen[6:]  # 6 batches per epoch, a new order each epoch

    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=8, save_top_k=-1)
    _trainer(tmp_path / "first", max_steps=8, callbacks=[checkpoint]).fit(Recorder(), data())
    path = next((tmp_path / "ckpt").glob("*step=8*.ckpt"))
    saved = torch.load(path, weights_only=True)["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert saved == [{"epoch": 1, "batches": 2}]
    resumed = Recorder()
    _trainer(tmp_path / "resumed", enable_checkpointing=False).fit(resumed, data(), ckpt_path=path)
    assert resumed.seen == whole.seen[8:]


def test_streaming_base_is_a_datamodule_with_the_shared_seams():
    assert issubclass(StreamingDataModule, DataModule) and issubclass(TensorDataModule, DataModule)
    assert TinyStreamingData().model_kwargs() == {"in_channels": 3, "num_classes": 10, "input_size": 4}
    with pytest.raises(RuntimeError, match="call setup"):
        TinyStreamingData().train_dataloader()
