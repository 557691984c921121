"""LightningDataModules, one per dataset, on a shared tensor-on-device base."""

from robustxai.data.base import TensorDataModule, TensorLoader
from robustxai.data.digits import DigitsDataModule
from robustxai.errors import DatasetError
from robustxai.data.mnist import FashionMNISTDataModule, MNISTDataModule

__all__ = ["DatasetError", "DigitsDataModule", "FashionMNISTDataModule", "MNISTDataModule",
           "TensorDataModule", "TensorLoader"]
