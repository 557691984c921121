"""Boopathy et al.'s GAP networks (seed 000): TF 'SAME' padding, CAM identity, init, the safe importer, parity.

The parity oracle is an independent NumPy forward pass written here from the specification (NHWC
tensors, HWIO weights straight from the pickles, TF's 'SAME' formula), since TensorFlow is not installed.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from robustxai.errors import CheckpointError, ConfigError
from robustxai.models import BoopathyNet, load_boopathy_network
from robustxai.models.boopathy import SameConv2d, SameMaxPool2d, tf_same_padding
from robustxai.models.importers.boopathy import RefusedGlobal, read_boopathy_file
from tests.conftest import ROOT, compose_config

NETWORKS = ROOT.parent / "shared" / "models" / "boopathy-networks"
FILES = sorted(p.name for p in NETWORKS.glob("*.pkl")) if NETWORKS.is_dir() else []


def released(name: str) -> Path:
    path = NETWORKS / name
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path


# ----------------------------------------------------------------------------------------------
# TF 'SAME' padding, by hand


@pytest.mark.parametrize("size,kernel,stride,pads", [
    (8, 3, 2, (0, 1)), (8, 4, 2, (1, 1)), (7, 4, 2, (1, 2)), (28, 4, 2, (1, 1)), (7, 7, 1, (3, 3)),
    (32, 3, 2, (0, 1)), (28, 5, 1, (2, 2)), (5, 2, 2, (0, 1)), (4, 1, 2, (0, 0)), (3, 5, 3, (1, 1))])
def test_tf_same_padding_formula(size, kernel, stride, pads):
    assert tf_same_padding(size, kernel, stride) == pads


def _ones_conv(kernel: int, stride: int) -> SameConv2d:
    conv = SameConv2d(1, 1, kernel, stride)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
    return conv


def test_same_conv_stride_2_even_input_kernel_3_pads_after_only():
    x = torch.arange(16.0).view(1, 1, 4, 4)  # rows 0 1 2 3 / 4 5 6 7 / 8 9 10 11 / 12 13 14 15
    # pad 0 before, 1 after: windows rows/cols {0,1,2} and {2,3,pad}
    expected = torch.tensor([[45.0, 39.0], [66.0, 50.0]])
    assert torch.equal(_ones_conv(3, 2)(x)[0, 0], expected)
    # PyTorch's symmetric padding=1 shifts the windows by one pixel: a different result
    symmetric = torch.nn.functional.conv2d(x, torch.ones(1, 1, 3, 3), stride=2, padding=1)[0, 0]
    assert not torch.equal(symmetric, expected)


def test_same_conv_stride_2_kernel_4_even_and_odd_inputs():
    x = torch.arange(16.0).view(1, 1, 4, 4)  # pad 1/1: windows {pad,0,1,2} and {1,2,3,pad}
    assert torch.equal(_ones_conv(4, 2)(x)[0, 0], torch.tensor([[45.0, 54.0], [81.0, 90.0]]))
    y = torch.arange(25.0).view(1, 1, 5, 5)  # pad 1 before, 2 after: windows {p,0,1,2} {1,2,3,4} {3,4,p,p}
    out = _ones_conv(4, 2)(y)[0, 0]
    rows = [[0, 1, 2], [1, 2, 3, 4], [3, 4]]
    expected = torch.tensor([[float(y[0, 0][r][:, c].sum()) for c in rows] for r in rows])
    assert torch.equal(out, expected)


def test_same_max_pool_ignores_the_padding():
    x = -1.0 - torch.arange(25.0).view(1, 1, 5, 5)  # all negative: a zero pad would win
    out = SameMaxPool2d(2, 2)(x)[0, 0]
    assert out.shape == (3, 3)
    assert torch.equal(out[2], torch.tensor([-21.0, -23.0, -25.0]))  # the real last row, not 0
    assert torch.equal(out[:, 2], torch.tensor([-5.0, -15.0, -25.0]))


# ----------------------------------------------------------------------------------------------
# the network


@pytest.mark.parametrize("arch,channels,side,feature", [("small", 1, 28, (100, 7, 7)), ("small", 3, 32, (100, 8, 8)),
                                                        ("pool", 1, 28, (64, 7, 7)), ("wresnet", 3, 32, (64, 8, 8))])
def test_logits_are_the_spatial_mean_of_cam(arch, channels, side, feature):
    torch.manual_seed(0)
    net = BoopathyNet(arch, channels, 10).double()
    x = torch.rand(3, channels, side, side, dtype=torch.float64)
    a, cam, logits = net.features(x), net.cam(x), net(x)
    assert a.shape == (3, *feature) and cam.shape == (3, 10, *feature[1:]) and logits.shape == (3, 10)
    torch.testing.assert_close(logits, cam.mean((2, 3)), rtol=0, atol=1e-12)
    # cam is the head applied per location: CAM_c = sum_k V[k, c] A_k
    torch.testing.assert_close(cam, torch.einsum("ck,nkhw->nchw", net.head.weight[:, :, 0, 0], a))
    torch.testing.assert_close(net.cam_plusplus(x),
                               torch.einsum("ck,nkhw->nchw", net.head.weight[:, :, 0, 0].clamp(min=0), a))


def test_architecture_is_the_pre_activation_chain_of_the_spec():
    small = BoopathyNet("small", 1, 10)
    assert [tuple(m.conv.weight.shape) for m in small.features] == [(16, 1, 4, 4), (32, 16, 4, 4), (100, 32, 7, 7)]
    assert isinstance(small.features[0].act, torch.nn.Identity)
    assert all(isinstance(m.act, torch.nn.ReLU) for m in list(small.features)[1:])
    assert small.head.bias is None and tuple(small.head.weight.shape) == (10, 100, 1, 1)
    wres = BoopathyNet("wresnet", 3, 9)
    convs = [m for m in wres.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 32 and sum(p.numel() for p in wres.parameters()) == 462_368 + 64 * 9
    kinds = [type(m).__name__ for m in wres.features]
    assert kinds.count("ResidualConv") == 15 and kinds[2] == "ResidualConv" and kinds[1] == "PreActConv"
    pool = BoopathyNet("pool")
    assert [type(m).__name__ for m in pool.features] == ["PreActConv", "SameMaxPool2d", "PreActConv", "SameMaxPool2d"]


def test_residual_shortcut_is_option_a():
    """At the stride-2 residual, the shortcut (two layers back) is 2x2-averaged and zero-padded 8 | 8 on channels."""
    torch.manual_seed(0)
    net = BoopathyNet("wresnet", 3, 10).double()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    outs, h = [x], x
    for layer in net.features:
        h = layer(h, outs[-2]) if type(layer).__name__ == "ResidualConv" else layer(h)
        outs.append(h)
    i = 11  # layers: 0 stem, (1,2)...(9,10) blocks of 16, 11 = conv32 s2, 12 = res32
    res = net.features[12]
    branch = res.conv(torch.relu(outs[i + 1]))
    short = torch.nn.functional.avg_pool2d(outs[i], 2)
    zeros = torch.zeros(2, 8, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(outs[i + 2], branch + torch.cat([zeros, short, zeros], 1))


def test_init_statistics_follow_the_seed():
    torch.manual_seed(0)
    net = BoopathyNet("wresnet", 3, 10).requires_grad_(False)
    for m in net.features.modules():
        if isinstance(m, torch.nn.Conv2d):
            fan_in = m.weight[0].numel()
            assert abs(float(m.weight.std()) * fan_in ** 0.5 - 1) < 0.12, m  # not He's sqrt(2 / fan_in)
            assert abs(float(m.weight.mean())) < 0.2 / fan_in ** 0.5
            assert torch.count_nonzero(m.bias) == 0
    big = BoopathyNet("small", 1, 10).requires_grad_(False)
    last = big.features[2].conv.weight  # 100 x 32 x 7 x 7: 156,800 draws
    assert abs(float(last.std()) * (32 * 49) ** 0.5 - 1) < 0.01
    assert abs(float(big.head.weight.std()) * 10 - 1) < 0.1  # N(0, 1/K), K = 100


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="arch must be one of"):
        BoopathyNet("resnet")
    with pytest.raises(ValueError, match="in_channels must be an integer"):
        BoopathyNet("small", 0)
    with pytest.raises(ValueError, match=r"expects \(N, 1, H, W\)"):
        BoopathyNet("small")(torch.rand(2, 3, 28, 28))


# ----------------------------------------------------------------------------------------------
# NumPy reference forward pass (NHWC, HWIO), written from the spec, for the released files


def np_same_pad(x: np.ndarray, k: int, s: int, value: float = 0.0) -> np.ndarray:
    def pads(n: int) -> tuple[int, int]:
        out = -(-n // s)
        total = max((out - 1) * s + k - n, 0)
        return total // 2, total - total // 2
    return np.pad(x, ((0, 0), pads(x.shape[1]), pads(x.shape[2]), (0, 0)), constant_values=value)


def np_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, s: int) -> np.ndarray:
    k = w.shape[0]
    win = sliding_window_view(np_same_pad(x, k, s), (k, k), axis=(1, 2))[:, ::s, ::s]  # N, Ho, Wo, C, k, k
    return np.einsum("nhwcij,ijco->nhwo", win, w, optimize=True) + b


def np_forward(params: list, spec: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits and CAM (NHWC) of the seed's load_model.predict, as spec section 1.1 describes it."""
    relu = lambda t: np.maximum(t, 0)  # noqa: E731
    layers = [x]
    for i, (f, k, s) in enumerate(zip(spec["filters"], spec["kernels"], spec["strides"])):
        if f == "pool":
            win = sliding_window_view(np_same_pad(x, k, s, -np.inf), (k, k), axis=(1, 2))[:, ::s, ::s]
            x = win.max(axis=(-2, -1))
        elif isinstance(s, str):
            w, b = params[i]
            x = np_conv(relu(x), w, b, int(s[1:]))
            short = layers[-2]
            if short.shape != x.shape:
                r = short.shape[1] // x.shape[1]
                n, h, wd, c = short.shape
                short = short.reshape(n, h // r, r, wd // r, r, c).mean(axis=(2, 4))
                extra = (x.shape[3] - c) // 2
                short = np.pad(short, ((0, 0), (0, 0), (0, 0), (extra, extra)))
            x = x + short
        else:
            w, b = params[i]
            x = np_conv(x if i == 0 else relu(x), w, b, s)
        layers.append(x)
    v = params[-1][0][0, 0]  # K x C
    return x.mean(axis=(1, 2)) @ v, x @ v


SPECS = {
    "smallgap": dict(filters=[16, 32, 100], kernels=[4, 4, 7], strides=[2, 2, 1]),
    "pool": dict(filters=[32, "pool", 64, "pool"], kernels=[5, 2, 5, 2], strides=[1, 2, 1, 2]),
    "wresnet": dict(filters=[16] + 10 * [16] + 10 * [32] + 10 * [64], kernels=31 * [3],
                    strides=[1] + 5 * [1, "r1"] + [2, "r1"] + 4 * [1, "r1"] + [2, "r1"] + 4 * [1, "r1"]),
}


@pytest.mark.parametrize("name", FILES or ["none"])
def test_released_network_equals_the_numpy_reference(name):
    path = released(name)
    with open(path, "rb") as fh:  # the reference reads the (trusted, checksummed) file with NumPy's own pickle
        params = pickle.load(fh)
    spec = SPECS[name.split("_")[1]]
    net = load_boopathy_network(path)
    assert not net.training and net.arch == {"smallgap": "small"}.get(name.split("_")[1], name.split("_")[1])
    channels, side = (1, 28) if name.startswith("mnist") else (3, 64 if name.startswith("restimagenet") else 32)
    rng = np.random.default_rng(0)
    x = rng.random((3, side, side, channels))
    x[1] = (x[1] > 0.8) * 1.0  # a sparse binary image, MNIST-like
    ref_logits, ref_cam = np_forward([tuple(a.astype(np.float64) for a in p) for p in params], spec, x)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        logits32, cam32 = net(xt.float()), net.cam(xt.float())
        net64 = net.double()
        logits64, cam64 = net64(xt), net64.cam(xt)
    np.testing.assert_allclose(logits64.numpy(), ref_logits, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(cam64.permute(0, 2, 3, 1).numpy(), ref_cam, rtol=1e-10, atol=1e-10)
    scale = np.abs(ref_logits).max()
    np.testing.assert_allclose(logits32.double().numpy(), ref_logits, rtol=0, atol=2e-5 * scale)
    np.testing.assert_allclose(cam32.permute(0, 2, 3, 1).double().numpy(), ref_cam, rtol=0,
                               atol=2e-5 * np.abs(ref_cam).max())


def test_released_files_match_their_checksums():
    if not FILES:
        pytest.skip("released networks not available")
    sums = dict(line.split()[::-1] for line in (NETWORKS / "SHA256SUMS").read_text().splitlines() if line.strip())
    for name in FILES:
        assert hashlib.sha256((NETWORKS / name).read_bytes()).hexdigest() == sums[name], name


def test_file_architecture_and_shape_are_inferred():
    net = load_boopathy_network(released("restimagenet_wresnet_normal_35.pkl"))
    assert (net.arch, net.in_channels, net.num_classes) == ("wresnet", 3, 9)
    assert net.cam(torch.rand(1, 3, 224, 224)).shape == (1, 9, 56, 56)
    pool = BoopathyNet(weights=str(released("mnist_pool_normal_100.pkl")))
    assert (pool.arch, pool.in_channels, pool.num_classes) == ("pool", 1, 10)


# ----------------------------------------------------------------------------------------------
# the safe importer: malicious, wrong and mismatched files


class _Payload:
    """Unpickling this object calls os.system (creating a marker file) if a loader lets it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    w = np.zeros((4, 4, 1, 16), np.float32)
    evil.write_bytes(pickle.dumps([(w, np.zeros(16, np.float32)), _Payload(marker)], protocol=3))
    with pytest.raises(RefusedGlobal, match=rf"refused global {os.system.__module__}\.system") as info:
        load_boopathy_network(evil)
    assert "none of its code ran" in str(info.value) and isinstance(info.value, CheckpointError)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused global"):
        BoopathyNet("small", weights=str(evil))
    assert not marker.exists()
    pickle.loads(evil.read_bytes())  # control: a plain unpickler does run the payload
    assert marker.exists()


def test_other_globals_and_object_arrays_are_refused(tmp_path):
    path = tmp_path / "builtins.pkl"
    path.write_bytes(pickle.dumps([(np.zeros((2, 2), np.float32), eval)]))
    with pytest.raises(RefusedGlobal, match="refused global builtins.eval"):
        read_boopathy_file(path)
    objects = tmp_path / "objects.pkl"
    objects.write_bytes(pickle.dumps([(np.array([1, "a"], dtype=object),), (np.zeros((1, 1, 2, 2), np.float32),)]))
    with pytest.raises(CheckpointError, match="not float32 arrays|refused global"):
        read_boopathy_file(objects)


def test_wrong_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_boopathy_network(tmp_path / "missing.pkl")
    text = tmp_path / "notes.pkl"
    text.write_text("not a pickle")
    with pytest.raises(CheckpointError, match="could not unpickle"):
        load_boopathy_network(text)
    woods = ROOT.parent / "shared" / "models" / "woods-prebuilt" / "resnet44-standard.pt"
    if woods.is_file():
        with pytest.raises(CheckpointError, match="not a Boopathy et al. network file.*found int"):
            load_boopathy_network(woods)
    odd = tmp_path / "odd.pkl"
    odd.write_bytes(pickle.dumps([(np.zeros((3, 3, 1, 8), np.float32), np.zeros(8, np.float32)),
                                  (np.zeros((1, 1, 8, 10), np.float32),)]))
    with pytest.raises(CheckpointError, match=r"none of the seed's architectures.*conv 3x3 1->8"):
        load_boopathy_network(odd)


def test_wrong_architecture_channels_and_classes_name_the_fix():
    pool = str(released("mnist_pool_normal_100.pkl"))
    with pytest.raises(CheckpointError, match="holds a 'pool' network, not 'small': use model=boopathy_pool"):
        BoopathyNet("small", weights=pool)
    with pytest.raises(CheckpointError, match="in_channels=1 but the model was asked for in_channels=3"):
        BoopathyNet("pool", 3, 10, weights=pool)
    with pytest.raises(CheckpointError, match="num_classes=10 but the model was asked for num_classes=43"):
        BoopathyNet("pool", 1, 43, weights=pool)


def test_model_config_loads_a_released_network(tmp_path):
    """``model=boopathy_small model.weights=<file>``: channels and classes from the data, checked against the file."""
    from robustxai.tasks.common import build_datamodule, build_model
    from robustxai.utils.config import validate_config

    path = released("mnist_smallgap_normal_100.pkl")
    cfg = compose_config("train", ["model=boopathy_small", f"model.weights={path}"], tmp_path)
    validate_config(cfg)
    model = build_model(cfg, build_datamodule(cfg))
    reference = load_boopathy_network(path)
    assert isinstance(model, BoopathyNet) and model.arch == "small"
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items())
    cfg = compose_config("train", ["model=boopathy_pool", f"model.weights={path}"], tmp_path)
    with pytest.raises(ConfigError, match="invalid config at `model`: .* holds a 'small' network, not 'pool': "
                                          "use model=boopathy_small"):
        build_model(cfg, build_datamodule(cfg))


# ----------------------------------------------------------------------------------------------
# accuracy of the released MNIST networks on the full MNIST test set (measured; slow)

MNIST_ACCURACY = {  # fraction of the 10,000 MNIST test images classified correctly, measured here
    "mnist_smallgap_normal_100.pkl": 0.9841, "mnist_smallgap_adv_100.pkl": 0.9660,
    "mnist_smallgap_trades_100.pkl": 0.9687, "mnist_smallgap_int_100.pkl": 0.9331,
    "mnist_smallgap_intadv_100.pkl": 0.9288, "mnist_smallgap_intone_100.pkl": 0.9497,
    "mnist_smallgap_int2_100.pkl": 0.9394, "mnist_smallgap_int2adv_100.pkl": 0.9254,
    "mnist_smallgap_ig_100.pkl": 0.9799, "mnist_smallgap_igsum_100.pkl": 0.9649,
    "mnist_pool_normal_100.pkl": 0.9740, "mnist_pool_adv_100.pkl": 0.8951, "mnist_pool_int_100.pkl": 0.9254,
}


@pytest.mark.slow
def test_released_mnist_networks_accuracy_on_the_full_test_set(tmp_path):
    from robustxai.data.mnist import MNISTDataModule

    data_dir = Path(os.environ.get("DATA_DIR", ROOT.parent / "shared" / "data"))
    if not (data_dir / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST not in {data_dir}")
    x, y = MNISTDataModule(data_dir=str(data_dir), cache_dir=str(tmp_path), download=False).load(train=False)
    x = x.float() / 255
    assert len(y) == 10_000
    for name, expected in MNIST_ACCURACY.items():
        net = load_boopathy_network(released(name))
        with torch.no_grad():
            pred = torch.cat([net(chunk).argmax(1) for chunk in x.split(1000)])
        assert round(float((pred == y).double().mean()), 3) == round(expected, 3), name


CIFAR10_ACCURACY = {  # fraction of the 10,000 CIFAR-10 test images classified correctly, measured here
    "cifar_smallgap_normal_200.pkl": 0.6719, "cifar_smallgap_adv_200.pkl": 0.5364,
    "cifar_smallgap_trades_200.pkl": 0.6398, "cifar_smallgap_int_200.pkl": 0.5280,
    "cifar_smallgap_int2_200.pkl": 0.5194, "cifar_wresnet_normal_200.pkl": 0.7620,
    "cifar_wresnet_adv_200.pkl": 0.7473, "cifar_wresnet_int_200.pkl": 0.7467,
}


@pytest.mark.slow
def test_released_cifar10_networks_accuracy_on_the_full_test_set(tmp_path):
    from robustxai.data.cifar10 import load_cifar10

    data_dir = Path(os.environ.get("DATA_DIR", ROOT.parent / "shared" / "data"))
    if not (data_dir / "cifar-10-batches-py").is_dir():
        pytest.skip(f"CIFAR-10 not in {data_dir}")
    x, y = load_cifar10(data_dir, train=False, download=False, cache_dir=tmp_path)
    x = x.float() / 255
    assert len(y) == 10_000
    for name, expected in CIFAR10_ACCURACY.items():
        net = load_boopathy_network(released(name))
        with torch.no_grad():
            pred = torch.cat([net(chunk).argmax(1) for chunk in x.split(500)])
        assert round(float((pred == y).double().mean()), 3) == round(expected, 3), name
