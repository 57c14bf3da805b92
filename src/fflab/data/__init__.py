"""Datasets: sources, integrity checks, caching and augmentation."""
from .augment import jitter, shift
from .cache import cache_dir
from .idx import parse_idx, read_idx, write_idx
from .mnist import DATASETS, DatasetSpec, Fetched, fetch_dataset, load_mnist

__all__ = ["load_mnist", "fetch_dataset", "Fetched", "DATASETS", "DatasetSpec", "cache_dir",
           "read_idx", "write_idx", "parse_idx", "jitter", "shift"]
