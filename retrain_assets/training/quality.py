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


QUALITY_CHECKS = ("columns_and_types", "null_rates", "value_ranges", "labels", "freshness", "min_rows", "leakage")
LEAKAGE_MAX_ROWS = 20_000  # the leakage check's rows (a sample of larger datasets): a few ms per feature
AGE_COLUMN = "__age_hours"
NUMERIC_TYPES = [
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "Int8", "Int16", "Int32", "Int64", "Float32", "Float64",
]


QUALITY_STATUSES = ("healthy", "warning", "critical")


@dataclass(frozen=True)
class QualityResult:
    """The verdict of one named quality check, with what was observed and what was expected.

    ``status`` (seed 004's data-quality status): ``critical`` when it failed (the retrain stops),
    ``warning`` when it passed but used more than half of a tolerance (``warnings`` say which), else
    ``healthy``."""

    name: str
    passed: bool
    observed: Any
    expected: Any
    message: str
    details: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "critical" if not self.passed else "warning" if self.warnings else "healthy"


def quality_status(checks) -> str:
    """The status of a dataset: the worst of its checks' (QualityResult objects, or the dicts the registry
    stores with each dataset; a stored check without a status is healthy when it passed)."""
    statuses = {c.status if isinstance(c, QualityResult) else c.get("status") or ("healthy" if c.get("passed") else "critical")
                for c in checks}
    return next((s for s in reversed(QUALITY_STATUSES) if s in statuses), "healthy")


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
        # Infinities crash training whatever their share: no tolerance for them (mostly = 1).
        items.append(("value_ranges", gxe.ExpectColumnValuesToBeBetween(column=column, min_value=-1e300, max_value=1e300)))
        # No production reference yet: at least refuse absurd magnitudes.
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


def _near_limit(expectation_type: str, kwargs: dict, result: dict) -> str | None:
    """Why a passed expectation is a warning: it used more than half of its tolerance (the share of
    unexpected values ``mostly`` allows, or the freshness limit), or None."""
    mostly = kwargs.get("mostly")
    if mostly is not None and mostly < 1 and "unexpected_percent" in result:
        share, allowed = (result["unexpected_percent"] or 0) / 100, 1 - mostly
        if share > allowed / 2:
            return (f"{kwargs.get('column')}: {share:.2%} unexpected, more than half of the {allowed:.2%} tolerated "
                    f"({expectation_type})")
    if expectation_type == "expect_column_min_to_be_between" and kwargs.get("column") == AGE_COLUMN:
        observed, limit = result.get("observed_value"), kwargs.get("max_value")
        if observed is not None and limit and observed > limit / 2:
            return f"newest row {observed:.1f} h old, more than half of the {limit:g} h allowed"
    return None


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
        details = dict(result.result or {})
        details["warning"] = _near_limit(config.type, config.kwargs, details) if result.success else None
        rows.append((config.meta["check"], bool(result.success), text, details))
    return rows


def quality_requirements(model: ModelSettings, reference: dict | None = None, *, generic: bool = False) -> dict[str, str]:
    """What each quality check requires, in words: each result's ``expected`` and, with ``generic`` (no
    particular run's reference), the checks' descriptions in the UI."""
    settings = model.dataset
    within = (
        f"{settings.range_mostly:.0%} of values within the production data's range +/- {settings.range_margin:g} x its "
        "span (beyond: a unit or sentinel error; new values inside are drift, not errors)"
    )
    finite = "every numeric value finite"
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
        "leakage": (f"no feature alone predicts {model.target!r} with cross-validated "
                    f"{'R2' if model.task == 'regression' else 'balanced accuracy'} >= {settings.leakage_threshold:g} "
                    "(a small tree on that one column)"),
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
        if name == "leakage":
            results.append(leakage_check(data, model, expected[name]))
            continue
        mine = [row for row in rows if row[0] == name]
        failures = [text for _, ok, text, _ in mine if not ok]
        observed = _observed(name, data, model, mine)
        if name == "freshness" and not mine:
            passed, message = False, "no timestamp column: cannot tell how fresh the data is; log predictions with timestamps"
        elif failures:
            passed, message = False, f"{name} failed: " + "; ".join(failures[:5])
        else:
            passed, message = True, f"{name} passed ({len(mine)} expectations)"
        warnings = [row[3]["warning"] for row in mine if row[1] and row[3].get("warning")]
        if passed and warnings:
            message = f"{name} passed with a warning: " + "; ".join(warnings[:3])
        results.append(QualityResult(name, passed, observed, expected[name], message, failures, warnings))
    return results


def single_feature_scores(frame: pd.DataFrame, model: ModelSettings, seed: int = 0) -> dict[str, float]:
    """How well each feature alone predicts the target: 3-fold cross-validated balanced accuracy
    (classification) or R2 (regression) of a small decision tree (at most 32 leaves) on that one column.

    Cross-validated, so an identifier that a tree could memorize scores nothing; a small tree, so any
    monotone or non-monotone function of the target is found. Rows with a missing target are left out.
    """
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    data = frame[frame[model.target].notna()] if model.target in frame.columns else frame.iloc[0:0]
    if len(data) > LEAKAGE_MAX_ROWS:
        data = data.sample(LEAKAGE_MAX_ROWS, random_state=seed)
    y = data[model.target]
    classification = model.task == "classification"
    if len(data) < 30 or (classification and (y.nunique() < 2 or y.value_counts().min() < 3)):
        return {}
    if classification:
        y = y.astype(str)
        estimator = DecisionTreeClassifier(max_leaf_nodes=32, min_samples_leaf=5, random_state=seed)
        folds, scoring = StratifiedKFold(3, shuffle=True, random_state=seed), "balanced_accuracy"
    else:
        y = pd.to_numeric(y, errors="coerce")
        estimator = DecisionTreeRegressor(max_leaf_nodes=32, min_samples_leaf=5, random_state=seed)
        folds, scoring = KFold(3, shuffle=True, random_state=seed), "r2"
    scores = {}
    for column in model.feature_names:
        if column not in data.columns:
            continue
        if column in model.numeric_features:
            values = pd.to_numeric(data[column], errors="coerce").replace([np.inf, -np.inf], np.nan)
            x = values.fillna(values.median() if values.notna().any() else 0.0).to_numpy(dtype=float)
        else:
            x = pd.factorize(data[column].astype(str))[0].astype(float)
        scores[column] = float(np.mean(cross_val_score(estimator, x.reshape(-1, 1), y, cv=folds, scoring=scoring)))
    return scores


def leakage_check(frame: pd.DataFrame, model: ModelSettings, expected: str) -> QualityResult:
    """A feature that alone predicts the target almost perfectly is the target in disguise (a label copied
    into a feature, a field filled in after the outcome): the model would score 1.0 on every test and be
    useless in production, so the dataset is refused, naming the feature."""
    limit = model.dataset.leakage_threshold
    scores = single_feature_scores(frame, model, model.training.seed)
    leaked = {c: round(v, 4) for c, v in scores.items() if v >= limit}
    observed = {c: round(v, 4) for c, v in sorted(scores.items(), key=lambda item: -item[1])[:3]} or "not enough rows"
    if leaked:
        metric = "R2" if model.task == "regression" else "balanced accuracy"
        message = (f"leakage failed: {', '.join(f'{c} alone predicts {model.target} with {metric} {v}' for c, v in leaked.items())} "
                   f"(>= {limit}): remove it from the features or fix how it is filled")
        return QualityResult("leakage", False, observed, expected, message, [message])
    return QualityResult("leakage", True, observed, expected, f"leakage passed ({len(scores)} features checked)")


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
