"""Weights: the model zoo, the download cache and checkpoint conversion.

``iqpfr.weights.resolve_weights("codeformer")`` returns a verified local file, downloading it into
``$IQPFR_HOME/weights`` when needed. Importing this package loads no torch; ``convert`` does, lazily.
This folder also holds the weight files shipped inside the package (``*.safetensors``).
"""

from __future__ import annotations

from iqpfr.weights.cache import (
    cache_root,
    cached_path,
    download,
    env_offline,
    file_status,
    resolve_weights,
    sha256_file,
    verify,
    weights_dir,
)
from iqpfr.weights.errors import (
    HashMismatchError,
    UnknownWeightsError,
    UnverifiedWeightsError,
    WeightsError,
    WeightsUnavailableError,
)
from iqpfr.weights.zoo import ZOO, ZooEntry, get_entry

__all__ = [
    "ZOO",
    "HashMismatchError",
    "UnknownWeightsError",
    "UnverifiedWeightsError",
    "WeightsError",
    "WeightsUnavailableError",
    "ZooEntry",
    "cache_root",
    "cached_path",
    "download",
    "env_offline",
    "file_status",
    "get_entry",
    "resolve_weights",
    "sha256_file",
    "verify",
    "weights_dir",
]
