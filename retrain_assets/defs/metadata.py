"""Small helpers that turn core results into metadata a person reads at a glance in the Dagster UI."""

from collections.abc import Mapping
from typing import Any

import dagster as dg


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def md_table(values: Mapping[str, Any] | None, thresholds: Mapping[str, Any] | None) -> str:
    """A two- or three-column markdown table: name | value [| threshold]."""
    values = dict(values or {})
    thresholds = dict(thresholds or {})
    names = list(dict.fromkeys([*values, *thresholds]))
    if not names:
        return "_nothing to report_"
    if thresholds:
        lines = ["| metric | value | threshold |", "|---|---|---|"]
        lines += [f"| {n} | {_fmt(values.get(n))} | {_fmt(thresholds.get(n))} |" for n in names]
    else:
        lines = ["| name | value |", "|---|---|"]
        lines += [f"| {n} | {_fmt(values.get(n))} |" for n in names]
    return "\n".join(lines)


def metric_metadata(metrics: Mapping[str, Any], prefix: str) -> dict[str, dg.MetadataValue]:
    """Numeric metrics as float metadata (plottable over materializations in the UI)."""
    return {
        f"{prefix}{name}": dg.MetadataValue.float(float(value))
        for name, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def root_cause(error) -> str:
    """The user's error inside Dagster's wrappers: the innermost cause's class and first message line.

    ``error`` is a ``SerializableErrorInfo`` (from a step failure event); Dagster wraps the exception an
    asset raised in DagsterExecutionStepExecutionError, whose own message says nothing about the data.
    """
    while error.cause is not None:
        error = error.cause
    lines = error.message.strip().splitlines()
    return lines[0] if lines else error.cls_name or "unknown error"
