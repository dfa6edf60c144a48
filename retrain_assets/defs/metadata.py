"""Small helpers that turn core results into metadata a person reads at a glance in the Dagster UI."""

import base64
import math
from collections.abc import Mapping
from typing import Any

import dagster as dg
import pandas as pd

# Dagster's standard metadata keys: the asset catalog shows them as the row count, columns and location.
ROW_COUNT, COLUMN_SCHEMA, URI = "dagster/row_count", "dagster/column_schema", "dagster/uri"


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


def markdown_image(png: bytes, alt: str) -> dg.MarkdownMetadataValue:
    """A picture as metadata: Dagster's UI renders markdown, so the PNG is inlined as a data URI and opens
    from the metadata table without access to the artifact store."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


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


def _column_type(dtype) -> str:
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    return "string"


def table_schema(frame: pd.DataFrame, descriptions: Mapping[str, str] | None = None) -> dg.TableSchema:
    descriptions = descriptions or {}
    return dg.TableSchema(columns=[dg.TableColumn(str(name), _column_type(dtype), description=descriptions.get(str(name)))
                                   for name, dtype in frame.dtypes.items()])


def frame_table(frame: pd.DataFrame) -> dg.TableMetadataValue:
    """A DataFrame as a sortable table in the UI (``MetadataValue.table``); missing values as empty cells,
    numbers to 4 significant digits (for reading and sorting; the asset's own data keeps full precision)."""

    def cell(value):
        value = value.item() if hasattr(value, "item") else value
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return None
        return float(f"{value:.4g}") if isinstance(value, float) else value

    records = [dg.TableRecord({str(k): cell(v) for k, v in row.items()})
               for row in frame.to_dict(orient="records")]
    return dg.MetadataValue.table(records, schema=table_schema(frame))
