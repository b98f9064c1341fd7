"""The run store's first import path, kept for scripts written against it: see respmatch.run."""

from respmatch.run import RESUME_MAY_CHANGE, RunInUseError, RunStore, export, read_run

__all__ = ["RESUME_MAY_CHANGE", "RunInUseError", "RunStore", "export", "read_run"]
