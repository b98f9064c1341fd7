"""Reading and validating structures for training."""

from .readers import read_structures
from .validate import StructureError, is_periodic, validate_structure

__all__ = ["StructureError", "is_periodic", "read_structures", "validate_structure"]
