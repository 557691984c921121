"""Architectures: plain ``nn.Module`` classifiers taking images in the pixel box [0, 1]."""

from robustxai.models.madry_cnn import MadryCNN
from robustxai.models.small_cnn import SmallCNN

__all__ = ["MadryCNN", "SmallCNN"]
