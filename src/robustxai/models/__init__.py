"""Architectures: plain ``nn.Module`` classifiers taking images in the pixel box [0, 1]."""

from robustxai.models.activations import HalfHuberReLU
from robustxai.models.madry_cnn import MadryCNN
from robustxai.models.rar_resnet import RARResNet
from robustxai.models.small_cnn import SmallCNN
from robustxai.models.woods_resnet import WoodsResNet

__all__ = ["HalfHuberReLU", "MadryCNN", "RARResNet", "SmallCNN", "WoodsResNet"]
