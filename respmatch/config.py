"""Configurations as frozen dataclasses that round-trip through plain values.

Checkpoints must load with ``torch.load(weights_only=True)``, which accepts lists but not
tuples, so tuples are stored as lists and turned back on loading.
"""

from __future__ import annotations

from dataclasses import asdict


class PlainDict:
    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict):
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
