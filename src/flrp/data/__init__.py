"""Data layer: DSRL-format HDF5 files, episodes, samplers, task constants."""

from flrp.data.dataset import OfflineDataset
from flrp.data.hdf5 import REQUIRED_KEYS, load_dsrl_hdf5, write_dsrl_hdf5

__all__ = ["OfflineDataset", "REQUIRED_KEYS", "load_dsrl_hdf5", "write_dsrl_hdf5"]
