"""Architectures: plain ``nn.Module`` classifiers taking images in the pixel box [0, 1]."""

from robustxai.models.activations import HalfHuberReLU
from robustxai.models.boopathy import BoopathyNet
from robustxai.models.kim import KimCIFARCNN, KimMNISTCNN, KimToyMLP
from robustxai.models.madry_cnn import MadryCNN
from robustxai.models.rar_resnet import RARResNet
from robustxai.models.small_cnn import SmallCNN
from robustxai.models.vaegan import KimVAEGAN as KimVAEGAN  # noqa: F401
from robustxai.models.woods_resnet import WoodsResNet

__all__ = ["HalfHuberReLU", "KimCIFARCNN", "KimMNISTCNN", "KimToyMLP", "MadryCNN", "RARResNet", "SmallCNN",
           "WoodsResNet"]

# the Boopathy et al. loader (importers import the model modules above, never the reverse)
from robustxai.models.importers.boopathy import load_boopathy_network  # noqa: E402

__all__ += ["BoopathyNet", "load_boopathy_network"]
