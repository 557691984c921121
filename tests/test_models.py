"""Architectures: the Madry CNN's exact shape and initialisation, the small CNN."""

from __future__ import annotations

import torch

from robustxai.models import MadryCNN, SmallCNN


def test_madry_cnn_matches_the_spec():
    torch.manual_seed(0)
    model = MadryCNN()
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(32, 1, 5, 5), (32,), (64, 32, 5, 5), (64,), (1024, 3136), (1024,), (10, 1024), (10,)]
    assert sum(p.numel() for p in model.parameters()) == 3_274_634
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_madry_cnn_initialisation_is_truncated_normal_with_bias_point_one():
    torch.manual_seed(0)
    model = MadryCNN()
    weights = torch.cat([m.weight.flatten() for m in model.modules() if hasattr(m, "weight")])
    biases = torch.cat([m.bias for m in model.modules() if hasattr(m, "bias")])
    assert weights.abs().max() <= 0.2 and torch.all(biases == 0.1)
    # a normal(0, 0.1) truncated at 2 sigma has std 0.1 * 0.8796
    assert abs(weights.std().item() - 0.08796) < 0.002 and abs(weights.mean().item()) < 0.001


def test_small_cnn_takes_other_shapes():
    model = SmallCNN(in_channels=3, num_classes=43, input_size=32)
    assert model(torch.rand(3, 3, 32, 32)).shape == (3, 43)
