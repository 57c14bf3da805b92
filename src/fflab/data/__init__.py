"""Datasets: sources, integrity checks, caching and augmentation."""
from .augment import jitter, shift
from .cache import cache_dir
from .cifar import CifarSpec, fetch_cifar10, load_cifar10
from .folder import load_image_folder
from .idx import parse_idx, read_idx, write_idx
from .mnist import DATASETS, DatasetSpec, Fetched, fetch_dataset, load_mnist

__all__ = ["load_mnist", "fetch_dataset", "Fetched", "DATASETS", "DatasetSpec", "cache_dir",
           "read_idx", "write_idx", "parse_idx", "jitter", "shift",
           "load_cifar10", "fetch_cifar10", "CifarSpec", "load_image_folder"]
