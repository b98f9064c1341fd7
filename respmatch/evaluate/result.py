"""What every evaluator returns: overall metrics, metrics per group, one record per structure.

The keys of ``summary``, ``groups`` and ``records`` are part of the public contract (they are what
``respmatch evaluate --json`` writes), so evaluators add keys but never rename them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from scipy.stats import spearmanr

from respmatch.files import atomic_write_bytes, check_output


@dataclass
class Evaluation:
    kind: str  # "molecule", "crystal" or "carbon"
    summary: dict = field(default_factory=dict)  # metric -> value over all structures
    groups: dict = field(default_factory=dict)  # group (e.g. reduced formula) -> {metric: value}
    records: list[dict] = field(default_factory=list)  # one per structure, in input order

    def to_dict(self) -> dict:
        return {"kind": self.kind, "summary": self.summary, "groups": self.groups, "records": self.records}

    def write_json(self, path: str | Path) -> None:
        check_output(path, option="json", kind="json")
        text = json.dumps(self.to_dict(), indent=1, default=_json_default) + "\n"
        atomic_write_bytes(path, text.encode())

    def table(self) -> str:
        """The summary, then one row per group, as aligned plain text."""
        lines = [f"{self.kind} evaluation"]
        width = max((len(key) for key in self.summary), default=0)
        lines += [f"  {key:<{width}}  {format_value(value)}" for key, value in self.summary.items()]
        if self.groups:
            columns = list(dict.fromkeys(key for metrics in self.groups.values() for key in metrics))
            rows = [["group", *columns]] + [
                [name, *(format_value(metrics.get(c, "")) for c in columns)]
                for name, metrics in self.groups.items()
            ]
            widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
            lines.append("")
            for k, row in enumerate(rows):
                lines.append("  ".join(cell.rjust(w) if c else cell.ljust(w) for c, (cell, w) in enumerate(zip(row, widths))))
                if k == 0:
                    lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)


def format_value(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.4g}"
    return str(value)


def share(count: int, total: int) -> float:
    """count/total, NaN (shown as '-') when there is nothing to count."""
    return count / total if total else float("nan")


def spearman(pairs: list[tuple[float, float]]) -> float:
    """Spearman's ρ of (a, b) pairs, e.g. (Ẽ, physical energy); NaN with fewer than three pairs
    or no spread in either (a rank correlation is then undefined).  The judges and the report
    both read this one."""
    if len(pairs) < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
        return math.nan
    return float(spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic)


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
