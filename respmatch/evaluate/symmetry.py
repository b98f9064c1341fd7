"""spglib calls without the DeprecationWarning that spglib 2.5+ raises about its own
error-handling switch on every call (pymatgen's SpacegroupAnalyzer included)."""

from __future__ import annotations

import warnings
from contextlib import contextmanager


@contextmanager
def quiet_spglib():
    """Silence spglib's ``OLD_ERROR_HANDLING`` DeprecationWarning, and only that, for a block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*OLD_ERROR_HANDLING", category=DeprecationWarning)
        yield
