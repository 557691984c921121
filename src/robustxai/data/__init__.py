"""LightningDataModules, one per dataset, on a shared tensor-on-device base."""

from robustxai.data.base import TensorDataModule, TensorLoader
from robustxai.data.cifar10 import CIFAR10DataModule
from robustxai.data.digits import DigitsDataModule
from robustxai.data.flower17 import Flower17DataModule
from robustxai.data.gtsrb import GTSRBDataModule
from robustxai.data.mnist import FashionMNISTDataModule, MNISTDataModule
from robustxai.data.toy import TwoGaussiansDataModule
from robustxai.errors import DatasetError

__all__ = ["CIFAR10DataModule", "DatasetError", "DigitsDataModule", "FashionMNISTDataModule",
           "Flower17DataModule", "GTSRBDataModule", "MNISTDataModule", "TensorDataModule", "TensorLoader",
           "TwoGaussiansDataModule"]
