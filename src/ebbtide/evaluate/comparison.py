"""The result of running several models on one split: a table, the split, and notes.

Both protocols (`temporal`, `leave_one_out`) return a subclass, so the CLI, JSON and
Markdown treat them alike; each subclass only says how to describe its split. Both show a
model's training messages through `fit_progress`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ebbtide.features.history import History
from ebbtide.jsonable import to_jsonable
from ebbtide.models.base import Model

__all__ = ["Comparison", "fit_progress"]


@dataclass(frozen=True)
class Comparison:
    """Models side by side on one split.

    Attributes
    ----------
    table : DataFrame
        One row per model: ``model``, then one column per metric, ``fit_seconds`` and
        ``score_seconds`` (NaN where a model does not answer a query).
    split : dict
        What the split holds, in numbers.
    k : int
        Length of the item lists.
    notes : list of str
    """

    protocol: ClassVar[str] = "comparison"

    table: pd.DataFrame
    split: dict[str, Any]
    k: int
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One sentence on the split, above the table."""
        return f"{self.protocol}: {self.split}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: protocol, split, k, one record per model, notes (NaN as null)."""
        return to_jsonable(
            {
                "protocol": self.protocol,
                "split": self.split,
                "k": self.k,
                "models": self.table.to_dict(orient="records"),
                "notes": list(self.notes),
            }
        )

    def to_markdown(self) -> str:
        """The split sentence, the table (– where a model does not answer), the notes."""
        columns = [c for c in self.table.columns if c != "model"]
        lines = [self.describe(), ""]
        headers = [c.replace("_at_k", f"@{self.k}").replace("_seconds", " s") for c in columns]
        lines.append("| model | " + " | ".join(headers) + " |")
        lines.append("|---|" + "---:|" * len(columns))
        for row in self.table.to_dict(orient="records"):
            cells = [_cell(row[c], c) for c in columns]
            lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
        lines += ["", *(f"- {note}" for note in self.notes)]
        return "\n".join(lines).rstrip() + "\n"


def _cell(value: Any, column: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.1f}" if column.endswith("seconds") else f"{value:.4f}"


def fit_progress(stage: Callable[[str], None], name: str) -> Callable[[str, float], None]:
    """A model's training messages (loss, events/s, ETA) shown as the current stage."""
    return lambda text, _share: stage(f"fitting {name}: {text}")


def timed_fit(model: Model, history: History, stage: Callable[[str], None]) -> float:
    """Fit `model` on `history` with its messages shown as the stage; the seconds it took.

    Both protocols fit every model this way, then say "scoring" while they query it.
    """
    stage(f"fitting {model.name}")
    clock = time.perf_counter()
    model.fit(history, progress=fit_progress(stage, model.name))
    seconds = time.perf_counter() - clock
    stage(f"scoring {model.name}")
    return seconds
