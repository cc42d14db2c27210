"""On-disk cache of derived arrays (generated datasets, binned frames).

Entries are keyed by a hash of the parameters that produced them, so changing a binning
parameter can never return stale frames. The cache folder is ``$FLEXSNN_CACHE`` or
``~/.cache/flexsnn``; files are pickle-free ``.npz`` written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from flexsnn.errors import CheckpointError
from flexsnn.io import load_arrays, save_arrays


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``root`` if given, else ``$FLEXSNN_CACHE``, else ``~/.cache/flexsnn``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("FLEXSNN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "flexsnn"


def cache_key(params: dict[str, Any]) -> str:
    """A short stable hash of JSON-able ``params``."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def cached_arrays(
    name: str,
    params: dict[str, Any],
    build: Callable[[], dict[str, np.ndarray]],
    root: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """Return the arrays cached under (``name``, ``params``), building and storing them once.

    A corrupt cache file is rebuilt (it is derived data; nothing of the user's is lost).
    """
    path = cache_dir(root) / f"{name}-{cache_key(params)}.npz"
    if path.is_file():
        try:
            return load_arrays(path, what="cache file")
        except CheckpointError:
            path.unlink(missing_ok=True)
    arrays = build()
    save_arrays(path, arrays)
    return arrays


def count_dtype(x: np.ndarray) -> np.dtype:
    """The smallest unsigned int type holding ``x`` exactly when it holds counts (non-negative
    integers), else float32: binned frames are cached in it (a quarter of the disk and load time
    of float32 for uint8 counts)."""
    if x.size == 0 or (x.min() >= 0 and np.array_equal(x, np.round(x))):
        for dtype in (np.uint8, np.uint16, np.uint32):
            if x.size == 0 or x.max() <= np.iinfo(dtype).max:
                return np.dtype(dtype)
    return np.dtype(np.float32)
