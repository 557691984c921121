"""Architectures: plain ``nn.Module`` classifiers taking images in the pixel box [0, 1], and their file loaders."""

from robustxai.models.activations import HalfHuberReLU
from robustxai.models.boopathy import BoopathyNet, load_boopathy_network
from robustxai.models.kim import KimCIFARCNN, KimMNISTCNN, KimToyMLP
from robustxai.models.madry_cnn import MadryCNN
from robustxai.models.rar_resnet import RARResNet
from robustxai.models.small_cnn import SmallCNN
from robustxai.models.vaegan import KimVAEGAN
from robustxai.models.woods_resnet import WoodsResNet, woods_resnet_from_file

__all__ = ["BoopathyNet", "HalfHuberReLU", "KimCIFARCNN", "KimMNISTCNN", "KimToyMLP", "KimVAEGAN", "MadryCNN",
           "RARResNet", "SmallCNN", "WoodsResNet", "load_boopathy_network", "woods_resnet_from_file"]
