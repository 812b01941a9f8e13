"""Plain JSON values from the numpy/pandas ones results hold.

Why one helper: every result object offers ``to_dict()`` for ``--json`` output, and each one
must turn numpy scalars and arrays into Python numbers and NaN/inf into ``null`` (JSON has no
NaN) the same way.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["to_jsonable"]


def to_jsonable(value: Any) -> Any:
    """`value` with dicts, lists, tuples and arrays made plain; non-finite floats become None.

    Examples
    --------
    >>> to_jsonable({"a": np.float64("nan"), "b": np.arange(2)})
    {'a': None, 'b': [0, 1]}
    """
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
