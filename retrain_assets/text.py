"""Plain-text tables for the command line."""

from collections.abc import Sequence


def text_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """Left-aligned columns separated by two spaces, with a dashed rule under the headers."""
    cells = [[("-" if value is None else str(value)) for value in row] for row in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *cells)] if headers else []
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    return "\n".join([line(list(map(str, headers))), line(["-" * w for w in widths]), *map(line, cells)])
