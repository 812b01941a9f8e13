"""Small helpers for writing SQL safely: bound values, quoted names.

Values are always bound as ``$name`` parameters; only identifiers and literals that
DuckDB cannot bind (column names, table-function options) are quoted here.
"""

from __future__ import annotations

import re

_PARAMETER = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def bind(sql: str, params: dict[str, object]) -> dict[str, object]:
    """The subset of `params` that `sql` uses (DuckDB refuses unused named parameters)."""
    used = set(_PARAMETER.findall(sql))
    return {name: value for name, value in params.items() if name in used}


def quote_ident(name: str) -> str:
    """Quote a column or table name for DuckDB, whatever characters it holds."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote a string literal where DuckDB accepts no parameter (table-function options)."""
    return "'" + value.replace("'", "''") + "'"
