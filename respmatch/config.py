"""Configurations as frozen dataclasses that round-trip through plain values.

Checkpoints must load with ``torch.load(weights_only=True)``, which accepts lists but not
tuples, so tuples are stored as lists and turned back on loading.
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import asdict, fields
from pathlib import PurePath

from respmatch.errors import RespmatchError


def plain(value):
    """JSON-ready copy: tuples and arrays → lists, numpy scalars → Python, paths → text (what a
    database, a checkpoint or a JSON file stores gives the same values back)."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return plain(value.tolist())
    if isinstance(value, PurePath):
        return str(value)
    return value


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, (tuple, list)) else value


class PlainDict:
    def to_dict(self) -> dict:
        return {k: plain(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict):
        return cls(**{k: _tuples(v) for k, v in values.items()})


def checked_options(cls, values: dict, what: str, prefix: str = "") -> dict:
    """``values`` for fields of the dataclass ``cls``, refused with one line naming the option if
    a key is unknown or a value has the wrong type (``fmax=abc``), before it can fail deep inside
    a run.  Lists become tuples."""
    known = {f.name: f.type for f in fields(cls)}
    checked = {}
    for key, value in values.items():
        if key not in known:
            raise RespmatchError(f"{what}: unknown option {prefix + key!r} (known: {', '.join(known)})")
        kind = known[key] if isinstance(known[key], str) else getattr(known[key], "__name__", "")
        if not _fits(value, kind):
            raise RespmatchError(f"{what} {prefix}{key}={value!r}: expected {_KIND_NAMES.get(kind, kind)}")
        checked[key] = _tuples(value)
    return checked


_KIND_NAMES = {"float": "a number", "int": "a whole number", "str": "a text", "bool": "True or False"}
_SIMPLE = {"float", "int", "str", "bool", "None"}


def _fits(value, kind: str) -> bool:
    """Whether ``value`` fits the annotation ``kind`` ('float', 'int | None', 'tuple[...]')."""
    alternatives = [part.strip() for part in kind.split("|")]
    if not all(a in _SIMPLE or a.startswith("tuple") for a in alternatives):
        return True  # an annotation this check does not know: the class itself decides
    for alternative in alternatives:
        if alternative == "None" and value is None:
            return True
        if alternative.startswith("tuple") and isinstance(value, (tuple, list)):
            return True
        if alternative == "bool" and isinstance(value, bool):
            return True
        if isinstance(value, bool):  # True is an int to Python, not to the user
            continue
        if alternative == "float" and isinstance(value, (int, float)) and math.isfinite(value):
            return True
        if alternative == "int" and isinstance(value, int):
            return True
        if alternative == "str" and isinstance(value, str):
            return True
    return False


_SHORT = reprlib.Repr()  # values in an error line: a glimpse, never a dump
_SHORT.maxstring = _SHORT.maxother = 68  # a sha256 checksum whole
_SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlevel = 4, 3, 2


def parameter_differences(stored: dict, given: dict, may_change=frozenset()) -> str:
    """'key: stored X, given Y; ...' for each key outside ``may_change`` whose value differs
    (empty when none does): why a resume would continue another run."""
    missing = "<missing>"
    keys = sorted((stored.keys() | given.keys()) - set(may_change))
    short = _SHORT.repr
    return "; ".join(
        f"{key}: stored {short(stored.get(key, missing))}, given {short(given.get(key, missing))}"
        for key in keys
        if stored.get(key, missing) != given.get(key, missing)
    )
