"""Data-quality validation of a training dataset with Great Expectations 1.x.

One expectation suite is built from the model's config (columns, types, target, limits) and, when a model
is already in production, from the profile of its training data (value ranges, known classes). It runs in
an ephemeral GX context (nothing written to disk) and its results are grouped into the named checks the
Dagster shell shows as blocking asset checks. GX takes seconds to import, so it is imported only here,
only when a validation runs.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from typing import Any, TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # settings import this package's settings module: no import cycle at runtime
    from retrain_assets.settings import ModelSettings


QUALITY_CHECKS = ("columns_and_types", "null_rates", "value_ranges", "labels", "freshness", "min_rows")
AGE_COLUMN = "__age_hours"
NUMERIC_TYPES = [
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "Int8", "Int16", "Int32", "Int64", "Float32", "Float64",
]


@dataclass(frozen=True)
class QualityResult:
    """The verdict of one named quality check, with what was observed and what was expected."""

    name: str
    passed: bool
    observed: Any
    expected: Any
    message: str
    details: list[str] = field(default_factory=list)


def _reference_bounds(low: float, high: float, margin: float) -> tuple[float, float]:
    """``margin`` spans beyond the reference [low, high]: values outside are orders of magnitude off (a unit
    or a sentinel error), not new values. A constant reference spans its own magnitude (at least 1)."""
    span = high - low if high > low else max(abs(high), 1.0)
    return low - margin * span, high + margin * span


def _expectations(frame: pd.DataFrame, model: ModelSettings, reference: dict | None, now: dt.datetime) -> list:
    """(check name, expectation) pairs; each expectation carries its check in ``meta``."""
    import great_expectations.expectations as gxe

    settings = model.dataset
    items: list[tuple[str, Any]] = []
    for column in [*model.feature_names, model.target]:
        items.append(("columns_and_types", gxe.ExpectColumnToExist(column=column)))
    present = set(frame.columns)
    for column in model.numeric_features:
        if column in present:
            items.append(("columns_and_types", gxe.ExpectColumnValuesToBeInTypeList(column=column, type_list=NUMERIC_TYPES)))
    for column in model.feature_names:
        if column in present:
            items.append(
                ("null_rates", gxe.ExpectColumnValuesToNotBeNull(column=column, mostly=1.0 - settings.max_null_fraction))
            )
    ranges = (reference or {}).get("ranges") or {}
    declared = {f.name: f for f in model.features}
    for column in model.numeric_features:
        if column not in present:
            continue
        # No production reference yet: at least refuse infinities and absurd magnitudes.
        low, high = _reference_bounds(*ranges[column], settings.range_margin) if column in ranges else (-1e300, 1e300)
        spec = declared[column]
        low = low if spec.min is None else max(low, spec.min)
        high = high if spec.max is None else min(high, spec.max)
        items.append(
            (
                "value_ranges",
                gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high, mostly=settings.range_mostly),
            )
        )
    for column in model.categorical_features:
        if column in present and declared[column].values is not None:
            items.append(
                (
                    "value_ranges",
                    gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(declared[column].values),
                                                    mostly=settings.range_mostly),
                )
            )
    if model.target in present:
        items.append(("labels", gxe.ExpectColumnValuesToNotBeNull(column=model.target)))
        if model.task == "classification":
            items.append(("labels", gxe.ExpectColumnUniqueValueCountToBeBetween(column=model.target, min_value=2)))
            classes = (reference or {}).get("classes")
            if classes:
                items.append(("labels", gxe.ExpectColumnValuesToBeInSet(column=model.target, value_set=list(classes))))
        else:
            items.append(("labels", gxe.ExpectColumnValuesToBeInTypeList(column=model.target, type_list=NUMERIC_TYPES)))
    if AGE_COLUMN in frame.columns:
        items.append(("freshness", gxe.ExpectColumnMinToBeBetween(column=AGE_COLUMN, max_value=settings.max_age_hours)))
    items.append(("min_rows", gxe.ExpectTableRowCountToBeBetween(min_value=settings.min_samples)))
    return items


def _describe(expectation_type: str, kwargs: dict, result: dict) -> str:
    column = kwargs.get("column")
    subject = f"{column}: " if column else ""
    if "observed_value" in result:
        return f"{subject}{expectation_type} observed {result['observed_value']}"
    if "unexpected_percent" in result:
        sample = result.get("partial_unexpected_list") or []
        return f"{subject}{expectation_type} {result['unexpected_percent']:.2f}% unexpected (e.g. {sample[:3]})"
    return f"{subject}{expectation_type}"


def _validate(frame: pd.DataFrame, items: list) -> list[tuple[str, bool, str, dict]]:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("training_data")
        .add_dataframe_asset("labeled_rows")
        .add_batch_definition_whole_dataframe("whole")
    )
    suite = gx.ExpectationSuite(name="training_dataset")
    for index, (check, expectation) in enumerate(items):
        expectation.meta = {"check": check, "index": index}
        suite.add_expectation(expectation)
    suite = context.suites.add(suite)
    validation = context.validation_definitions.add(gx.ValidationDefinition(name="training_dataset", data=batch, suite=suite))
    outcome = validation.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
    rows = []
    for result in outcome.results:
        config = result.expectation_config
        error = (result.exception_info or {}).get("exception_message") if isinstance(result.exception_info, dict) else None
        text = _describe(config.type, config.kwargs, dict(result.result or {}))
        if error:
            text = f"{text} (error: {error})"
        rows.append((config.meta["check"], bool(result.success), text, dict(result.result or {})))
    return rows


def quality_requirements(model: ModelSettings, reference: dict | None = None, *, generic: bool = False) -> dict[str, str]:
    """What each quality check requires, in words: each result's ``expected`` and, with ``generic`` (no
    particular run's reference), the checks' descriptions in the UI."""
    settings = model.dataset
    within = (
        f"{settings.range_mostly:.0%} of values within the production data's range +/- {settings.range_margin:g} x its "
        "span (beyond: a unit or sentinel error; new values inside are drift, not errors)"
    )
    finite = f"{settings.range_mostly:.0%} of numeric values finite"
    bounds = [f"{f.name} in [{f.min if f.min is not None else '-inf'}, {f.max if f.max is not None else 'inf'}]"
              for f in model.features if f.min is not None or f.max is not None]
    bounds += [f"{f.name} among {list(f.values)}" for f in model.features if f.values is not None]
    declared = f"; declared: {', '.join(bounds)}" if bounds else ""
    if generic:
        ranges = f"{finite}; once a model is in production, {within}{declared}"
    else:
        ranges = (within if reference else f"{finite} (no production reference yet)") + declared
    labels = f"target {model.target!r} present, never null, "
    if model.task == "regression":
        labels += "numeric"
    else:
        classes = (reference or {}).get("classes")
        labels += "at least two classes" + (f", among {classes}" if classes else "")
    return {
        "columns_and_types": f"columns {[*model.feature_names, model.target]}; numeric {model.numeric_features}",
        "null_rates": f"null share <= {settings.max_null_fraction:g} per feature",
        "value_ranges": ranges,
        "labels": labels,
        "freshness": f"newest row <= {settings.max_age_hours:g} h old",
        "min_rows": f">= {settings.min_samples} rows",
    }


def validate_training_data(
    frame: pd.DataFrame, model: ModelSettings, reference: dict | None = None, now: dt.datetime | None = None
) -> list[QualityResult]:
    """Validate ``frame`` (features, target, timestamp) and return one result per name in QUALITY_CHECKS.

    ``reference`` = ``{"ranges": {column: (min, max)}, "categories": {column: [...]}, "classes": [...]}`` of
    the production model's training data; without it (a first model) ranges only reject infinities and
    labels need two classes. A categorical level the production data never had is fine in a few rows;
    in more than ``1 - range_mostly`` of them it is a schema change a person should confirm. ``now``
    anchors the freshness check (default: the wall clock, UTC).
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    data = frame.copy()
    if "timestamp" in data.columns and len(data):
        stamps = pd.to_datetime(data["timestamp"], utc=True)
        data[AGE_COLUMN] = ((pd.Timestamp(now) - stamps).dt.total_seconds() / 3600.0).to_numpy(dtype=float)
    for column in model.numeric_features:
        if column in data.columns and data[column].dtype == object:
            data[column] = data[column].astype(str)  # typed check reports it instead of GX failing on mixed objects
    rows = _validate(data, _expectations(data, model, reference, now))
    expected = quality_requirements(model, reference)
    results = []
    for name in QUALITY_CHECKS:
        mine = [row for row in rows if row[0] == name]
        failures = [text for _, ok, text, _ in mine if not ok]
        observed = _observed(name, data, model, mine)
        if name == "freshness" and not mine:
            passed, message = False, "no timestamp column: cannot tell how fresh the data is; log predictions with timestamps"
        elif failures:
            passed, message = False, f"{name} failed: " + "; ".join(failures[:5])
        else:
            passed, message = True, f"{name} passed ({len(mine)} expectations)"
        results.append(QualityResult(name, passed, observed, expected[name], message, failures))
    return results


def _observed(name: str, data: pd.DataFrame, model: ModelSettings, rows: list) -> Any:
    """A short observed value per check for the UI."""
    if name == "min_rows":
        return len(data)
    if name == "freshness":
        return None if AGE_COLUMN not in data.columns or data.empty else round(float(data[AGE_COLUMN].min()), 2)
    if name == "null_rates":
        columns = [c for c in model.feature_names if c in data.columns]
        return {c: round(float(data[c].isna().mean()), 4) for c in columns if data[c].isna().any()} or "no nulls"
    if name == "labels" and model.target in data.columns and model.task == "classification":
        return sorted(map(str, data[model.target].dropna().unique().tolist()))
    if name == "columns_and_types":
        missing = [c for c in [*model.feature_names, model.target] if c not in data.columns]
        return {"missing": missing} if missing else "all present"
    failing = [text for _, ok, text, _ in rows if not ok]
    return failing[:3] or "ok"


def reference_for(frame: pd.DataFrame, model: ModelSettings) -> dict:
    """The ranges, categories and classes of a dataset, to validate the next dataset against."""
    ranges = {}
    for column in model.numeric_features:
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        if values.size:
            ranges[column] = (float(values.min()), float(values.max()))
    categories = {c: sorted(frame[c].dropna().astype(str).unique().tolist()) for c in model.categorical_features}
    classes = sorted(frame[model.target].dropna().unique().tolist()) if model.task == "classification" else None
    return {"ranges": ranges, "categories": categories, "classes": classes}
