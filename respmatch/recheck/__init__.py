"""Physical re-check of generated structures: a universal MLIP for crystals, GFN-xTB for molecules."""

from respmatch.recheck.run import recheck

__all__ = ["recheck"]
