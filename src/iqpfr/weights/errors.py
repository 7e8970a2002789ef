"""Exceptions raised when weights cannot be found, fetched or trusted."""

from __future__ import annotations


class WeightsError(Exception):
    """Base class: a weight file is unknown, unavailable, corrupt or unverifiable."""


class UnknownWeightsError(WeightsError, LookupError):
    """A name that is neither a zoo entry nor an existing file."""


class WeightsUnavailableError(WeightsError):
    """The file is not in the cache and cannot be fetched (offline, no network, no source)."""


class HashMismatchError(WeightsError):
    """A file's sha256 differs from the pinned one; the file was not accepted."""


class UnverifiedWeightsError(WeightsError):
    """The zoo pins no sha256 for this file, and unverified files were not allowed."""
