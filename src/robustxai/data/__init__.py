"""LightningDataModules, one per dataset, on a shared base: tensors on the device, or files streamed by workers."""

from robustxai.data.base import DataModule, TensorDataModule, TensorLoader
from robustxai.data.cifar10 import CIFAR10DataModule
from robustxai.data.digits import DigitsDataModule
from robustxai.data.flower17 import Flower17DataModule
from robustxai.data.gtsrb import GTSRBDataModule
from robustxai.data.mnist import FashionMNISTDataModule, MNISTDataModule
from robustxai.data.restricted_imagenet import RestrictedImageNetDataModule
from robustxai.data.streaming import StreamingDataModule, StreamingDataset, StreamingLoader
from robustxai.data.toy import TwoGaussiansDataModule
from robustxai.errors import DatasetError

__all__ = ["CIFAR10DataModule", "DataModule", "DatasetError", "DigitsDataModule", "FashionMNISTDataModule",
           "Flower17DataModule", "GTSRBDataModule", "MNISTDataModule", "RestrictedImageNetDataModule",
           "StreamingDataModule", "StreamingDataset", "StreamingLoader", "TensorDataModule", "TensorLoader",
           "TwoGaussiansDataModule"]
