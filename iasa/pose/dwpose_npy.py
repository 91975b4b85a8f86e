"""DWPose frames saved as pickled .npy files (``np.save(path, pose_dict)``), read without running code.

A pickled .npy may call any Python function while it is unpickled, so training never loads one
(np.load(allow_pickle=False)); `scripts/prepare_dataset.py --convert_keypoints` turns a dataset's DWPose
folders into keypoint .npz files once, reading each frame with `read_dwpose_npy`: an unpickler that builds
only dicts, lists, tuples, numbers, strings and NumPy arrays and refuses every other global a file names.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from iasa.pose.keypoints import KeypointFileError

# What NumPy's own pickles of arrays, dtypes and scalars name (numpy 1.x: numpy.core, 2.x: numpy._core).
_ALLOWED_GLOBALS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype")}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return super().find_class(module, name)


def read_dwpose_npy(path: str | Path) -> Any:
    """The object of a .npy file: a plain array, or the dict / list of arrays that np.save pickled into it."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            version = npy_format.read_magic(handle)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"unsupported .npy format version {version}")
            read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            _, _, dtype = read_header(handle)
            if dtype != np.dtype(object):
                return np.load(path, allow_pickle=False)
            stored = _ArrayOnlyUnpickler(handle).load()
    except pickle.UnpicklingError as error:
        raise KeypointFileError(f"{path} holds more than DWPose data ({error}); it is not read") from error
    except (OSError, ValueError, EOFError, TypeError, AttributeError, IndexError, KeyError) as error:
        raise KeypointFileError(f"{path} is not a readable .npy file ({type(error).__name__}: {error})") from error
    if isinstance(stored, np.ndarray) and stored.dtype == object and stored.shape == ():
        return stored.item()  # np.save(path, pose_dict) pickles a 0-d object array around the dict
    return stored
