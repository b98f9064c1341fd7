"""The command line's parsing layer: option types that check a value the moment it is parsed,
and a command parser that records which options name files the command reads and writes, and
which options need another one.

``cli.main`` runs one check over those records before any work (``files.check_files``), so an
output option added tomorrow is protected by declaring it with ``add_output``; no command checks
its own files by hand.  Imports stay light: parsing must not load torch or the judges.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
from collections.abc import Callable


def _type(name: str, accepted: str, convert: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse type: ``convert(text)``, or one line naming the value and what is accepted."""

    def parse(text: str):
        try:
            return convert(text)
        except (ValueError, ArithmeticError):
            raise argparse.ArgumentTypeError(f"got {text!r}; expected {accepted}") from None

    parse.__name__ = name
    return parse


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _batch_size(text: str) -> int | None:
    """``auto`` (None: the relaxer sizes its batch by atoms) or a count of structures."""
    return None if text.strip().lower() == "auto" else _positive_int(text)


def _positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(text)
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise ValueError(text)
    return value


def _volume(text: str) -> float | tuple[float, float]:
    values = [float(part) for part in text.split(":")]
    if len(values) > 2 or not all(math.isfinite(v) and v > 0 for v in values) or values != sorted(values):
        raise ValueError(text)
    return values[0] if len(values) == 1 else (values[0], values[1])


positive_int = _type("positive whole number", "a whole number of at least 1", _positive_int)
non_negative_int = _type("whole number", "a whole number of at least 0", _non_negative_int)
batch_size = _type("batch size", "a whole number of at least 1, or auto (by atoms)", _batch_size)
positive_float = _type("positive number", "a finite number above 0", _positive_float)
fraction = _type("fraction", "a number from 0 to 1", _fraction)
volume_range = _type("volume", "Å³ per atom: a number V > 0 or a range A:B with 0 < A ≤ B", _volume)


def figure_path(text: str) -> str:
    """A plot's file name, with a suffix matplotlib writes."""
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = text.rpartition(".")[2].lower() if "." in text.rpartition("/")[2] else ""
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix not in formats:
        common = ", ".join(f".{name}" for name in ("png", "svg", "pdf") if name in formats)
        raise argparse.ArgumentTypeError(f"got {text!r}; expected a figure file ({common} or another matplotlib format)")
    return text


# Database servers ASE's database reads, with the module each needs.
DATABASE_SCHEMES = {"postgresql": "psycopg2", "mysql": "pymysql", "mariadb": "pymysql"}


def database(text: str) -> str:
    """A database to read: a file path, or a URL of a server ASE supports whose driver is installed."""
    scheme, sep, _ = text.partition("://")
    if not sep:
        return text
    if scheme not in DATABASE_SCHEMES:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected a file or a {'/'.join(DATABASE_SCHEMES)}:// URL")
    if importlib.util.find_spec(DATABASE_SCHEMES[scheme]) is None:
        raise argparse.ArgumentTypeError(f"got {text!r}; {scheme} needs the Python package {DATABASE_SCHEMES[scheme]}")
    return text


def run_file(text: str) -> str:
    """A run database to write: a file (one writer per run is enforced by SQLite), not a URL."""
    if "://" in text:
        raise argparse.ArgumentTypeError(f"got {text!r}; a run is written to an SQLite file path (RUN.db), not a URL")
    return text


class Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line (exit code 2) like every other fault."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


MAX_LINE = 200  # characters of an error line: a summary, never a dump


def one_line(message: str, limit: int = MAX_LINE) -> str:
    """The message on one line, its middle elided past ``limit`` characters."""
    line = " ".join(message.split())
    return line if len(line) <= limit else line[: limit - 20] + " … " + line[-17:]


class CommandParser(Parser):
    """One command's parser.  ``add_input`` / ``add_output`` declare the options that name files
    it reads and writes (an output with the kind of file it writes, see ``files.KINDS``);
    ``needs`` declares an option that does nothing without another."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.inputs: list[str] = []
        self.outputs: list[tuple[str, str]] = []
        self.requirements: list[tuple[str, tuple[str, ...]]] = []

    def add_input(self, *flags, **kwargs) -> argparse.Action:
        action = self.add_argument(*flags, **kwargs)
        self.inputs.append(action.dest)
        return action

    def add_output(self, *flags, kind: str, **kwargs) -> argparse.Action:
        action = self.add_argument(*flags, **kwargs)
        self.outputs.append((action.dest, kind))
        return action

    def needs(self, option: str, *any_of: str) -> None:
        """``option`` does nothing unless one of ``any_of`` is given too."""
        self.requirements.append((option, any_of))

    def _action(self, option: str) -> argparse.Action:
        return next(a for a in self._actions if option in a.option_strings or a.dest == option)

    def given(self, args: argparse.Namespace, option: str) -> bool:
        action = self._action(option)
        return getattr(args, action.dest) not in (action.default, None, False, [])

    def check_requirements(self, args: argparse.Namespace) -> None:
        for option, any_of in self.requirements:
            if self.given(args, option) and not any(self.given(args, other) for other in any_of):
                self.error(f"{option} does nothing without {' or '.join(any_of)}; give {any_of[0]} too")

    def files(self, args: argparse.Namespace) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
        """The files of this invocation: inputs as (option, path), outputs as (option, path, kind)."""

        def named(dest: str) -> tuple[str, list]:
            action = self._action(dest)
            value = getattr(args, dest)
            values = value if isinstance(value, list) else [value]
            return (action.option_strings[0] if action.option_strings else dest), [v for v in values if v is not None]

        inputs = [(option, path) for dest in self.inputs for option, paths in [named(dest)] for path in paths]
        outputs = [
            (option, path, kind) for dest, kind in self.outputs for option, paths in [named(dest)] for path in paths
        ]
        return inputs, outputs
