"""Tables printed on a terminal: bounded in rows and in cell width (a CSV or JSON written beside keeps every cell whole)."""
from __future__ import annotations

import pandas as pd

MAX_CELL = 60  # characters of one printed cell


def shorten(value, width: int = MAX_CELL):
    """A text cell cut to ``width`` characters with an ellipsis (other values as they are).

    Examples:
        >>> shorten("x" * 100, 10)
        'xxxxxxxxx…'
        >>> shorten(3.5, 10)
        3.5
    """
    if isinstance(value, str) and len(value) > width:
        return value[: width - 1] + "…"
    return value


def terminal_table(df: pd.DataFrame, max_rows: int = 60, width: int = MAX_CELL) -> str:
    """``df``'s first ``max_rows`` rows as text, text cells shortened to ``width`` characters, column names too."""
    head = df.head(max_rows).copy()
    for col in head.columns:
        if head[col].dtype == object or pd.api.types.is_string_dtype(head[col]):
            head[col] = head[col].map(lambda v: shorten(v, width))
    head.columns = [shorten(str(c), width) for c in head.columns]
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.max_colwidth", width + 1):
        return head.to_string(index=False)
