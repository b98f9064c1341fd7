"""Configurations as frozen dataclasses that round-trip through plain values.

Checkpoints must load with ``torch.load(weights_only=True)``, which accepts lists but not
tuples, so tuples are stored as lists and turned back on loading.
"""

from __future__ import annotations

from dataclasses import asdict


def _lists(value):
    return [_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, (tuple, list)) else value


class PlainDict:
    def to_dict(self) -> dict:
        return {k: _lists(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict):
        return cls(**{k: _tuples(v) for k, v in values.items()})
