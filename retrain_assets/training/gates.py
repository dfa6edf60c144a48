"""Evaluation gates: the rules a candidate must pass before it may replace the production model.

Each gate returns a GateResult with the values it measured next to the thresholds it applied, so the UI
can show *why* a candidate was rejected. The candidate and the production model are scored on the same
held-out test rows of the new dataset: the comparison is about today's data, not each model's own past.
A gate that cannot apply (no production model yet, no sensitive columns configured) passes and says so.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, TYPE_CHECKING

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from retrain_assets.training.comparison import metric_shortfalls, paired_loss_test
from retrain_assets.metrics import HIGHER_IS_BETTER, compute_metrics, positive_column, predict_with_probabilities
from retrain_assets.config.training import GATE_NAMES, GateSettings

if TYPE_CHECKING:  # settings import this package's settings module: no import cycle at runtime
    from retrain_assets.settings import ModelSettings

MIN_GROUP_ROWS = 30  # smaller fairness groups are reported but not judged: their metrics are noise


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    applicable: bool
    value: dict[str, Any] = field(default_factory=dict)
    threshold: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _round(values: dict) -> dict:
    return {k: round(float(v), 6) if isinstance(v, (float, np.floating)) else v for k, v in values.items()}


def absolute_gate(metrics: dict[str, float], model: ModelSettings, gates: GateSettings) -> GateResult:
    if model.task == "classification":
        floors = {"precision": gates.min_precision, "recall": gates.min_recall, "accuracy": gates.min_accuracy,
                  "auc": gates.min_auc}
        limits = {k: (">=", v) for k, v in floors.items() if v is not None}
    else:
        limits = {
            k: op_value for k, op_value in
            {"mae": ("<=", gates.max_mae), "rmse": ("<=", gates.max_rmse), "r2": (">=", gates.min_r2)}.items()
            if op_value[1] is not None
        }
    if not limits:
        return GateResult("absolute_thresholds", True, False, _round(metrics), {}, "no absolute thresholds configured")
    failures = []
    for name, (op, limit) in limits.items():
        value = metrics.get(name)
        ok = value is not None and (value >= limit if op == ">=" else value <= limit)
        if not ok:
            failures.append(f"{name} {value if value is None else round(value, 4)} (needs {op} {limit})")
    threshold = {k: f"{op} {v}" for k, (op, v) in limits.items()}
    value = _round({k: metrics[k] for k in limits if k in metrics})
    if failures:
        return GateResult("absolute_thresholds", False, True, value, threshold, "below the absolute floor: " + ", ".join(failures))
    return GateResult("absolute_thresholds", True, True, value, threshold, "every absolute threshold met")


def _relative_limits(model: ModelSettings, gates: GateSettings, production: dict[str, float]) -> dict[str, float]:
    """The worst value of each metric the candidate may have, given the production model's value."""
    if model.task == "classification":
        limits = {k: production[k] * (1 - gates.max_relative_drop) for k in ("accuracy", "precision", "recall") if k in production}
        if "f1" in production:
            limits["f1"] = production["f1"] - gates.max_f1_drop
        if "auc" in production:
            limits["auc"] = production["auc"] - gates.max_auc_drop
        return limits
    limits = {k: production[k] * gates.max_error_ratio for k in ("mae", "rmse") if k in production}
    if "r2" in production:
        limits["r2"] = production["r2"] - gates.max_r2_drop
    return limits


def relative_gate(
    candidate: dict[str, float], production: dict[str, float] | None, model: ModelSettings, gates: GateSettings
) -> GateResult:
    if production is None:
        return GateResult("relative_to_production", True, False, _round(candidate), {}, "no production model to compare with")
    limits = _relative_limits(model, gates, production)
    failures = []
    for name, limit in limits.items():
        value = candidate.get(name)
        ok = value is not None and (value >= limit if HIGHER_IS_BETTER[name] else value <= limit)
        if not ok:
            failures.append(f"{name} {value if value is None else round(value, 4)} vs production {production[name]:.4f}")
    value = _round({**{f"candidate_{k}": v for k, v in candidate.items()}, **{f"production_{k}": v for k, v in production.items()}})
    threshold = {k: f"{'>=' if HIGHER_IS_BETTER[k] else '<='} {v:.4f}" for k, v in limits.items()}
    if failures:
        return GateResult("relative_to_production", False, True, value, threshold, "worse than production: " + ", ".join(failures))
    return GateResult("relative_to_production", True, True, value, threshold, "at least as good as production on the new test set")


def _bootstrap_primary(y, candidate_pred, production_pred, model: ModelSettings, gates: GateSettings, seed: int):
    """Bootstrap distribution of (candidate - production) on the primary metric, higher = candidate better.

    Binary classification: F1 of the positive class; multiclass: accuracy; regression: relative MAE
    improvement ``(MAE_prod - MAE_cand) / MAE_prod``. Rows are resampled jointly (paired bootstrap) and
    computed for all resamples at once.
    """
    rng = np.random.default_rng(seed)
    n = len(y)
    index = rng.integers(0, n, size=(gates.bootstrap_samples, n))
    if model.task == "regression":
        y = np.asarray(y, dtype=float)
        cand_err = np.abs(y - np.asarray(candidate_pred, dtype=float))[index].mean(axis=1)
        prod_err = np.abs(y - np.asarray(production_pred, dtype=float))[index].mean(axis=1)
        return "relative_mae_improvement", (prod_err - cand_err) / np.maximum(prod_err, 1e-12)
    y = np.asarray(y)
    if len(np.unique(y)) <= 2:
        positive = model.positive_label

        def f1(pred):
            truth, guess = (y == positive)[index], (np.asarray(pred) == positive)[index]
            tp = (truth & guess).sum(axis=1)
            wrong = (truth ^ guess).sum(axis=1)
            return np.where(2 * tp + wrong > 0, 2 * tp / np.maximum(2 * tp + wrong, 1), 0.0)

        return "f1_difference", f1(candidate_pred) - f1(production_pred)
    cand = (np.asarray(candidate_pred) == y)[index].mean(axis=1)
    prod = (np.asarray(production_pred) == y)[index].mean(axis=1)
    return "accuracy_difference", cand - prod


def significance_gate(
    y, candidate_pred, production_pred, model: ModelSettings, gates: GateSettings, seed: int
) -> GateResult:
    """Fail when the candidate is worse than production with confidence, by more than a tolerance.

    The lower bound of the paired-bootstrap confidence interval of (candidate - production) must not be
    below ``-significance_tolerance``: the candidate must be shown, at the configured confidence, to lose
    at most the tolerance. On small test sets the interval is wide, so this gate asks for enough test rows
    (or a larger tolerance) before a model is replaced.
    """
    if production_pred is None:
        return GateResult("significance", True, False, {}, {}, "no production model to compare with")
    name, deltas = _bootstrap_primary(y, candidate_pred, production_pred, model, gates, seed)
    alpha = 1 - gates.bootstrap_confidence
    low, high = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    value = _round({f"{name}_mean": float(deltas.mean()), "ci_low": float(low), "ci_high": float(high)})
    threshold = {"ci_low": f">= {-gates.significance_tolerance}", "confidence": gates.bootstrap_confidence,
                 "bootstrap_samples": gates.bootstrap_samples}
    if low < -gates.significance_tolerance:
        return GateResult("significance", False, True, value, threshold,
                          f"cannot rule out a loss larger than {gates.significance_tolerance}: {name} "
                          f"{gates.bootstrap_confidence:.0%} CI [{low:.4f}, {high:.4f}]")
    return GateResult("significance", True, True, value, threshold,
                      f"no loss beyond {gates.significance_tolerance}: {name} {gates.bootstrap_confidence:.0%} CI [{low:.4f}, {high:.4f}]")


def relative_significance_gate(y, candidate: "Scored", production: "Scored | None", model: ModelSettings,
                               gates: GateSettings, seed: int) -> GateResult:
    """``relative_to_production`` under ``comparison: significance``: fail only the metrics on which the
    candidate is below the documents' relative limit with confidence (paired bootstrap, Bonferroni)."""
    if production is None:
        return GateResult("relative_to_production", True, False, _round(candidate.metrics), {},
                          "no production model to compare with")
    shortfalls = metric_shortfalls(y, candidate.predictions, production.predictions, candidate.scores, production.scores,
                                   model.task, model.positive_label, gates, seed)
    value = _round({**{f"candidate_{s.metric}": s.candidate for s in shortfalls},
                    **{f"production_{s.metric}": s.production for s in shortfalls},
                    **{f"{s.metric}_margin_upper": s.margin_upper for s in shortfalls}})
    level = 1 - (1 - gates.bootstrap_confidence) / max(len(shortfalls), 1)
    threshold = {f"{s.metric}_margin_upper": f">= 0 (limit {s.limit:.4f} at {level:.1%} confidence)" for s in shortfalls}
    failed = [s for s in shortfalls if s.failed]
    if failed:
        return GateResult("relative_to_production", False, True, value, threshold, "worse than production with confidence: " + ", ".join(
            f"{s.metric} {s.candidate:.4f} vs production {s.production:.4f} (limit {s.limit:.4f}; upper bound of the "
            f"margin {s.margin_upper:+.4f})" for s in failed))
    return GateResult("relative_to_production", True, True, value, threshold,
                      "not worse than production beyond the tolerances with confidence on the same new test rows")


def paired_loss_gate(y, candidate_pred, production_pred, model: ModelSettings, gates: GateSettings) -> GateResult:
    """``significance`` under ``comparison: significance``: McNemar-type paired test of per-row errors."""
    if production_pred is None:
        return GateResult("significance", True, False, {}, {}, "no production model to compare with")
    test = paired_loss_test(y, candidate_pred, production_pred, model.task, gates.significance_tolerance,
                            gates.bootstrap_confidence)
    what = "relative MAE" if model.task == "regression" else "error rate"
    value = _round({f"{what.replace(' ', '_')}_difference": test.mean_difference, "z": test.z, "p_value": test.p_value,
                    "rows": test.rows})
    threshold = {"p_value": f">= {1 - gates.bootstrap_confidence:g} for a loss beyond {gates.significance_tolerance:g}"}
    text = f"{what} difference {test.mean_difference:+.4f} (tolerance {gates.significance_tolerance:g}, p {test.p_value:.3g})"
    if test.worse:
        return GateResult("significance", False, True, value, threshold, f"worse than production with confidence: {text}")
    return GateResult("significance", True, True, value, threshold, f"not shown worse than production: {text}")


MIN_CLASS_ROWS = 5  # a rate conditioned on a class (recall, false-positive rate) needs this many rows of it

FAIRNESS_METRICS = {  # what each fairness_metric compares between groups, in words
    "recall_gap": "recall of the positive class (equal opportunity)",
    "demographic_parity": "share of rows predicted positive (demographic parity)",
    "equalized_odds": "recall and false-positive rate, the larger of the two gaps (equalized odds)",
}


@dataclass(frozen=True)
class GroupDisparity:
    """The gap of one fairness metric between the groups of one column.

    ``groups``: each judged group's rate(s); ``not_judged``: the groups too small to judge, with why (their
    rates would be noise, so they are reported, never compared).
    """

    metric: str
    disparity: float
    groups: dict[str, Any]
    not_judged: dict[str, str]


def _group_counts(test: pd.DataFrame, predictions: np.ndarray, model: ModelSettings, column: str) -> pd.DataFrame:
    """Per group of ``column``: rows, and (classification, one-vs-rest on ``positive_label``) positives,
    negatives, true and false positives, predicted positives; (regression) the sum of absolute errors."""
    y = test[model.target].to_numpy()
    keys = test[column].astype(object).where(test[column].notna(), "<missing>").astype(str).to_numpy()
    if model.task == "regression":
        parts = {"rows": np.ones(len(y)), "abs_error": np.abs(y.astype(float) - predictions.astype(float))}
    else:
        truth, guess = y == model.positive_label, predictions == model.positive_label
        parts = {"rows": np.ones(len(y)), "positives": truth, "negatives": ~truth, "tp": truth & guess,
                 "fp": ~truth & guess, "selected": guess}
    return pd.DataFrame({k: np.asarray(v, dtype=float) for k, v in parts.items()}).groupby(keys, sort=True).sum()


def group_disparity(test: pd.DataFrame, predictions, model: ModelSettings, column: str,
                    metric: str = "recall_gap") -> GroupDisparity:
    """Largest gap of ``metric`` between the groups of ``column`` (regression: the MAE gap relative to the
    overall MAE, whatever ``metric``), counted for all groups at once.

    A group is judged when it has at least MIN_GROUP_ROWS rows and, for a rate conditioned on the true
    class (recall; false-positive rate), at least MIN_CLASS_ROWS rows of that class; the others are reported
    in ``not_judged``. Fewer than two judged groups: no gap to measure (0).
    """
    counts = _group_counts(test, np.asarray(predictions), model, column)
    big = counts["rows"] >= MIN_GROUP_ROWS
    why = pd.Series(np.where(big, "", [f"{int(n)} rows < {MIN_GROUP_ROWS}" for n in counts["rows"]]), index=counts.index)
    if model.task == "regression":
        metric, rates = "relative_mae_gap", pd.DataFrame({"mae": counts["abs_error"] / counts["rows"]})
        scale = max(float(counts["abs_error"].sum() / counts["rows"].sum()), 1e-12)
    else:
        scale = 1.0
        recall = counts["tp"] / counts["positives"].where(counts["positives"] > 0)
        fpr = counts["fp"] / counts["negatives"].where(counts["negatives"] > 0)
        needs = {"recall_gap": ("positives",), "demographic_parity": (), "equalized_odds": ("positives", "negatives")}[metric]
        for cls in needs:
            few = big & (why == "") & (counts[cls] < MIN_CLASS_ROWS)
            why[few] = [f"{int(n)} {cls} < {MIN_CLASS_ROWS}" for n in counts.loc[few, cls]]
        rates = {"recall_gap": pd.DataFrame({"recall": recall}),
                 "demographic_parity": pd.DataFrame({"positive_rate": counts["selected"] / counts["rows"]}),
                 "equalized_odds": pd.DataFrame({"recall": recall, "false_positive_rate": fpr})}[metric]
    judged = rates[why == ""]
    gap = float((judged.max() - judged.min()).max()) / scale if len(judged) >= 2 else 0.0
    groups = {str(g): (round(float(r.iloc[0]), 4) if len(r) == 1 else {k: round(float(v), 4) for k, v in r.items()})
              for g, r in judged.iterrows()}
    return GroupDisparity(metric, gap, groups, {str(g): w for g, w in why[why != ""].items()})


def fairness_gate(test: pd.DataFrame, predictions, production_predictions, model: ModelSettings, gates: GateSettings) -> GateResult:
    """Each sensitive column's group disparity must be below ``max_group_disparity`` and at most production's
    on the same test rows (+ ``max_disparity_increase``): the documents' "subgroup disparity < 10 %" and
    "fairness maintained or improved". Groups too small to judge are listed in the value, not judged."""
    columns = list(gates.sensitive_columns)
    if not columns:
        return GateResult("fairness", True, False, {}, {}, "no sensitive_columns configured for this model")
    missing = [c for c in columns if c not in test.columns]
    if missing:
        return GateResult("fairness", False, True, {}, {"columns": columns},
                          f"sensitive columns {missing} are not in the dataset: add them to the model's features or fix gates.sensitive_columns")
    value: dict[str, Any] = {}
    threshold: dict[str, Any] = {}
    failures, notes = [], []
    for column in columns:
        mine = group_disparity(test, predictions, model, column, gates.fairness_metric)
        value["metric"] = mine.metric
        value[f"{column}_disparity"] = round(mine.disparity, 4)
        value[f"{column}_groups"] = mine.groups
        if mine.not_judged:
            value[f"{column}_not_judged"] = mine.not_judged
            notes.append(f"{column}: {len(mine.not_judged)} group(s) too small to judge ({', '.join(mine.not_judged)})")
        threshold[f"{column}_disparity"] = f"< {gates.max_group_disparity:g}"
        if mine.disparity >= gates.max_group_disparity:
            failures.append(f"{column} disparity {mine.disparity:.3f} >= {gates.max_group_disparity:g}")
        if production_predictions is not None:
            theirs = group_disparity(test, production_predictions, model, column, gates.fairness_metric).disparity
            value[f"{column}_production_disparity"] = round(theirs, 4)
            limit = theirs + gates.max_disparity_increase
            threshold[f"{column}_disparity"] += f" and <= {limit:.4f} (production {theirs:.4f} + {gates.max_disparity_increase:g})"
            if mine.disparity > limit + 1e-12:
                failures.append(f"{column} disparity {mine.disparity:.3f} worse than production's {theirs:.3f}")
    suffix = ("; " + "; ".join(notes)) if notes else ""
    if failures:
        return GateResult("fairness", False, True, value, threshold,
                          f"groups treated too differently ({value['metric']}): " + ", ".join(failures) + suffix)
    against = " and not worse than production" if production_predictions is not None else ""
    return GateResult("fairness", True, True, value, threshold,
                      f"{value['metric']} disparity below {gates.max_group_disparity:g}{against} on {columns}{suffix}")


def measure_latency(pipeline, rows: pd.DataFrame, batch_rows: int = 100, repeats: int = 30,
                    against=None) -> dict[str, float] | tuple[dict[str, float], dict[str, float]]:
    """p50/p99 seconds of single-row and ``batch_rows``-row predictions over ``repeats`` calls each; with
    ``against`` (the production model), both are measured call by call in turn and both results returned.

    Measured with one OpenMP/BLAS thread, as ``retrain serve`` predicts: that is the latency requests see,
    and it keeps the measurement honest on a busy machine (OpenMP threads competing with another process
    for the same cores slow a prediction tenfold, which would reject a model for its neighbour's load).
    Interleaving the two models makes their ratio fair: a burst of load slows both, not one.
    """
    batch = rows.iloc[:batch_rows]
    models = [pipeline] if against is None else [pipeline, against]
    times = {(m, kind): np.empty(repeats) for m in range(len(models)) for kind in ("single", "batch")}
    with threadpool_limits(1):
        for model in models:
            model.predict(batch)  # warm-up: first calls pay for lazy initialization
        for kind, make in (("single", lambda i: rows.iloc[[i % len(rows)]]), ("batch", lambda i: batch)):
            for i in range(repeats):
                frame = make(i)
                for index, model in enumerate(models):
                    started = time.perf_counter()
                    model.predict(frame)
                    times[(index, kind)][i] = time.perf_counter() - started
    out = [{f"{kind}_{q}_s": float(np.percentile(times[(index, kind)], 50 if q == "p50" else 99))
            for kind in ("single", "batch") for q in ("p50", "p99")} for index in range(len(models))]
    return out[0] if against is None else (out[0], out[1])


def _latency_failures(mine: dict, theirs: dict | None, gates: GateSettings) -> list[str]:
    """What is too slow in a measurement (empty: nothing)."""
    failures = []
    for kind in ("single", "batch"):
        p99 = mine[f"{kind}_p99_s"]
        if p99 > gates.max_latency_p99_s:
            failures.append(f"{kind} p99 {p99 * 1000:.1f} ms > {gates.max_latency_p99_s * 1000:.0f} ms")
        if theirs is not None:
            ratio = p99 / max(theirs[f"{kind}_p99_s"], 1e-9)
            if ratio > gates.max_latency_ratio and p99 > gates.latency_noise_floor_s:
                failures.append(f"{kind} p99 {ratio:.2f}x production")
    return failures


def latency_gate(candidate, production, features: pd.DataFrame, gates: GateSettings) -> GateResult:
    """p99 latency of single-row and 100-row predictions under the absolute limit and at most
    ``max_latency_ratio`` x production's, measured in the same process.

    Ratios are only judged above ``latency_noise_floor_s``: at a few milliseconds, scheduler jitter on a
    shared machine is larger than any difference between two models. The two models are timed call by call
    in turn, so load on the machine slows both alike; a failing measurement is repeated once and the better
    of the two kept, so a single pause of a busy machine does not reject a model.
    """
    mine, theirs = measure_latency(candidate, features, against=production) if production is not None else (
        measure_latency(candidate, features), None)
    if _latency_failures(mine, theirs, gates):  # once more: a single pause of a busy machine rejects nothing
        again = measure_latency(candidate, features, against=production) if production is not None else (
            measure_latency(candidate, features), None)
        mine = {k: min(v, again[0][k]) for k, v in mine.items()}
        if theirs is not None:
            theirs = {k: min(v, again[1][k]) for k, v in theirs.items()}
    failures = _latency_failures(mine, theirs, gates)
    value: dict[str, Any] = {f"candidate_{k}": v for k, v in mine.items()}
    threshold: dict[str, Any] = {"p99_s": f"<= {gates.max_latency_p99_s}"}
    if theirs is not None:
        for kind in ("single", "batch"):
            value[f"production_{kind}_p99_s"] = theirs[f"{kind}_p99_s"]
            value[f"{kind}_p99_ratio"] = mine[f"{kind}_p99_s"] / max(theirs[f"{kind}_p99_s"], 1e-9)
            threshold[f"{kind}_p99_ratio"] = f"<= {gates.max_latency_ratio} (judged above {gates.latency_noise_floor_s * 1000:.0f} ms)"
    value = _round(value)
    if failures:
        return GateResult("latency", False, True, value, threshold, "too slow: " + ", ".join(failures))
    return GateResult("latency", True, True, value, threshold,
                      f"p99 {mine['single_p99_s'] * 1000:.1f} ms per row, {mine['batch_p99_s'] * 1000:.1f} ms per 100 rows")


def size_gate(candidate_size: int | None, production_size: int | None, gates: GateSettings) -> GateResult:
    value = {"candidate_bytes": candidate_size, "production_bytes": production_size}
    if candidate_size is None or production_size is None:
        return GateResult("size", True, False, value, {}, "no production model to compare size with")
    ratio = candidate_size / max(production_size, 1)
    value["ratio"] = round(ratio, 4)
    threshold = {"ratio": f"<= {gates.max_size_ratio}"}
    if ratio > gates.max_size_ratio:
        return GateResult("size", False, True, value, threshold, f"artifact {ratio:.2f}x the production model's size")
    return GateResult("size", True, True, value, threshold, f"artifact {ratio:.2f}x the production model's size")


def _edge_rows(features: pd.DataFrame, model: ModelSettings) -> pd.DataFrame:
    """Rows serving will meet sooner or later: every value missing, and categories never seen in training."""
    missing = features.iloc[:1].copy()
    for column in model.numeric_features:
        missing[column] = np.nan
    for column in model.categorical_features:
        missing[column] = None
    unseen = features.iloc[:1].copy()
    for column in model.categorical_features:
        unseen[column] = "__never_seen_category__"
    return pd.concat([missing, unseen], ignore_index=True)


def smoke_gate(candidate, test: pd.DataFrame, model: ModelSettings, gates: GateSettings) -> GateResult:
    """The candidate answers sanely: right length, finite values, known classes, valid probabilities,
    and no crash on a single row, an all-missing row or an unseen category."""
    features = test[model.feature_names].iloc[: gates.smoke_rows]
    problems = []
    try:
        predictions = np.asarray(candidate.predict(features))
        if len(predictions) != len(features):
            problems.append(f"{len(predictions)} predictions for {len(features)} rows")
        if model.task == "regression" and not np.all(np.isfinite(predictions.astype(float))):
            problems.append("non-finite predictions")
        if model.task == "classification":
            known = set(np.asarray(getattr(candidate, "classes_", [])).tolist())
            strange = set(predictions.tolist()) - known
            if strange:
                problems.append(f"unknown classes {sorted(map(str, strange))}")
            if hasattr(candidate, "predict_proba"):
                probabilities = candidate.predict_proba(features)
                if not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-6) or (probabilities < 0).any():
                    problems.append("probabilities do not sum to 1")
        candidate.predict(features.iloc[:1])
        edge = np.asarray(candidate.predict(_edge_rows(features, model)))
        if model.task == "regression" and not np.all(np.isfinite(edge.astype(float))):
            problems.append("non-finite prediction for a row with missing values")
    except Exception as error:  # noqa: BLE001 - any crash is exactly what this gate reports
        problems.append(f"prediction raised {type(error).__name__}: {error}")
    value = {"rows": len(features), "problems": len(problems)}
    threshold = {"problems": "== 0"}
    if problems:
        return GateResult("smoke_test", False, True, value, threshold, "smoke test failed: " + "; ".join(problems))
    return GateResult("smoke_test", True, True, value, threshold,
                      f"{len(features)} rows, one row, an all-missing row and an unseen category scored sanely")


@dataclass(frozen=True)
class Scored:
    """One model's predictions on the test rows, its scores (binary: the positive class's probability) and
    its metrics, computed once for every gate."""

    predictions: np.ndarray
    scores: np.ndarray | None
    metrics: dict


def score(pipeline, features: pd.DataFrame, y, model: ModelSettings) -> Scored:
    predictions, probabilities = predict_with_probabilities(pipeline, features, model.task)
    scores, labels = None, None
    if probabilities is not None:
        labels = list(pipeline.classes_)
        scores = positive_column(pipeline, probabilities, model.positive_label) if probabilities.shape[1] == 2 else probabilities
    return Scored(predictions, scores if np.ndim(scores) == 1 else None,
                  compute_metrics(y, predictions, model.task, model.positive_label, scores, labels))


def evaluate_gates(
    candidate,
    production,
    test_frame: pd.DataFrame,
    model: ModelSettings,
    gates: GateSettings,
    candidate_size_bytes: int | None = None,
    production_size_bytes: int | None = None,
    seed: int = 0,
) -> list[GateResult]:
    """Every enabled gate (``gates.enabled``), in GATE_NAMES order, for ``candidate`` against ``production``
    (None: no model yet).

    If the production model cannot score the new test rows (its features changed, its file is unusable),
    the comparison gates fail with that reason rather than letting an unchecked candidate through. The
    smoke test always runs first (nothing else is worth measuring on a model that cannot score).
    ``gates.comparison`` chooses how the two comparison gates judge (:mod:`retrain_assets.training.comparison`).
    """
    enabled = [name for name in GATE_NAMES if name in gates.enabled]
    if test_frame.empty:
        return [GateResult(name, False, True, {}, {}, "the dataset has no test rows: nothing to evaluate the candidate on")
                for name in enabled]
    smoke = smoke_gate(candidate, test_frame, model, gates)
    if not smoke.passed:
        return [smoke if name == "smoke_test" else GateResult(name, False, True, {}, {}, f"not evaluated: {smoke.message}")
                for name in enabled]
    features = test_frame[model.feature_names]
    y = test_frame[model.target].to_numpy()
    scored = score(candidate, features, y, model)
    production_scored = production_error = None
    if production is not None:
        try:
            production_scored = score(production, features, y, model)
        except Exception as error:  # noqa: BLE001 - reported as a failed comparison, never a crash
            production_error = f"the production model cannot score the new test set ({type(error).__name__}: {error})"
    production_metrics = None if production_scored is None else production_scored.metrics
    production_pred = None if production_scored is None else production_scored.predictions
    significance = gates.comparison == "significance"
    gate_functions = {
        "absolute_thresholds": lambda: absolute_gate(scored.metrics, model, gates),
        "relative_to_production": (
            (lambda: relative_significance_gate(y, scored, production_scored, model, gates, seed)) if significance
            else (lambda: relative_gate(scored.metrics, production_metrics, model, gates))),
        "significance": (
            (lambda: paired_loss_gate(y, scored.predictions, production_pred, model, gates)) if significance
            else (lambda: significance_gate(y, scored.predictions, production_pred, model, gates, seed))),
        "fairness": lambda: fairness_gate(test_frame, scored.predictions, production_pred, model, gates),
        "latency": lambda: latency_gate(candidate, None if production_error else production, features, gates),
        "size": lambda: size_gate(candidate_size_bytes, production_size_bytes, gates),
        "smoke_test": lambda: smoke,
    }
    results = []
    for name in enabled:
        if production_error and name in ("relative_to_production", "significance"):
            results.append(GateResult(name, False, True, {}, {}, production_error))
        else:
            results.append(gate_functions[name]())
    return results


def gate_requirements(model: ModelSettings, gates: GateSettings | None = None) -> dict[str, str]:
    """What each gate requires of a candidate, in words, with this model's thresholds: the checks'
    descriptions in the Dagster UI, so a reader sees the rule before looking at a result."""
    gates = gates or model.gates
    if model.task == "classification":
        floors = {"precision": gates.min_precision, "recall": gates.min_recall, "accuracy": gates.min_accuracy,
                  "AUC": gates.min_auc}
        absolute = ", ".join(f"{k} >= {v:g}" for k, v in floors.items() if v is not None)
        relative = (f"F1 >= production - {gates.max_f1_drop:g}, AUC >= production - {gates.max_auc_drop:g}, "
                    f"accuracy/precision/recall >= production x {1 - gates.max_relative_drop:g}")
        primary = "F1 of the positive class (multiclass: accuracy)"
        group_metric = FAIRNESS_METRICS[gates.fairness_metric]
    else:
        floors = {"MAE <=": gates.max_mae, "RMSE <=": gates.max_rmse, "R2 >=": gates.min_r2}
        absolute = ", ".join(f"{k} {v:g}" for k, v in floors.items() if v is not None)
        relative = f"MAE and RMSE <= production x {gates.max_error_ratio:g}, R2 >= production - {gates.max_r2_drop:g}"
        primary, group_metric = "relative MAE", "MAE relative to the overall MAE"
    fairness = (
        f"largest gap between groups of {', '.join(gates.sensitive_columns)} in {group_metric} < "
        f"{gates.max_group_disparity:g}, and <= production's gap on the same test rows + {gates.max_disparity_increase:g}; "
        f"groups under {MIN_GROUP_ROWS} test rows (or, for a class-conditioned rate, under {MIN_CLASS_ROWS} rows of the "
        "class) are reported, not judged"
        if gates.sensitive_columns else "no sensitive_columns configured: reported as not applicable"
    )
    if gates.comparison == "significance":
        level = f"{gates.bootstrap_confidence:.0%}"
        judged = relative if model.task == "regression" else (
            f"F1 >= production - {gates.max_f1_drop:g}, AUC >= production - {gates.max_auc_drop:g}, accuracy >= "
            f"production x {1 - gates.max_relative_drop:g} (precision and recall shown, not judged: a trade-off)")
        relative_rule = (f"fails only a metric the candidate is below its limit on with confidence (paired bootstrap, "
                         f"{gates.bootstrap_samples} resamples, {level} family-wise): {judged}")
        loss = "relative absolute error" if model.task == "regression" else "error rate"
        significance_rule = (f"paired per-row errors (McNemar-type z-test): fails only when the candidate's {loss} "
                             f"exceeds production's by more than {gates.significance_tolerance:g} with {level} confidence")
    else:
        relative_rule = f"point estimates: {relative}"
        significance_rule = (f"paired bootstrap ({gates.bootstrap_samples} resamples) of {primary}, candidate - production: "
                             f"the lower bound of its {gates.bootstrap_confidence:.0%} interval >= "
                             f"-{gates.significance_tolerance:g}")
    return {
        "absolute_thresholds": f"on the test split: {absolute}" if absolute else "no absolute thresholds configured",
        "relative_to_production": f"both scored on the same new test rows; {relative_rule}",
        "significance": significance_rule,
        "fairness": fairness,
        "latency": (
            f"p99 of single-row and of 100-row predictions (one thread) <= {gates.max_latency_p99_s:g} s, and each "
            f"<= {gates.max_latency_ratio:g}x production's (ratios judged above {gates.latency_noise_floor_s * 1000:g} ms)"
        ),
        "size": f"artifact <= {gates.max_size_ratio:g}x production's",
        "smoke_test": (
            f"{gates.smoke_rows} test rows and edge cases (every value missing, unseen categories) predict without error, "
            "finite values, known classes"
        ),
    }
