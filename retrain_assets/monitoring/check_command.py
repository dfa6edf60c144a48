"""``retrain check``: a one-off retrain decision for two files, without Dagster or a config file.

The same :func:`~retrain_assets.monitoring.decision.decide` as the monitoring run: the drift threshold is
calibrated on chunks of the reference file (every feature weighs the same, there is no model to ask), and
``--baseline`` (accuracy, or MAE and RMSE) stands for the held-out loss, taken as measured on as many rows
as the reference file has.

Exit code 0 whether or not retraining is advised; 2 (through the CLI's error handling) only when the
input cannot be read or compared, with a message naming the file or column.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from retrain_assets.errors import DataError
from retrain_assets.monitoring.dataset_drift import detect_drift
from retrain_assets.monitoring.decision import Decision, Evidence, Outcomes, decide
from retrain_assets.monitoring.profiles import ReferenceProfile
from retrain_assets.monitoring.reference_pack import ReferencePack, calibrate_drift, weighted_drift
from retrain_assets.monitoring.sequential import LossReference
from retrain_assets.settings import ModelSettings


def read_table(path: str) -> pd.DataFrame:
    """A CSV (optionally gzipped) or Parquet file as a frame."""
    file = Path(path)
    if not file.exists():
        raise DataError(f"{path}: no such file")
    try:
        if file.suffix == ".parquet":
            return pd.read_parquet(file)
        return pd.read_csv(file)
    except (ValueError, OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read it as {'Parquet' if file.suffix == '.parquet' else 'CSV'} ({error})") from error


def read_vector(spec: str) -> np.ndarray:
    """Predictions or actuals: ``file.npy``, a CSV/Parquet file's first column, or ``file.csv:column``."""
    path, _, column = spec.partition(":") if not Path(spec).exists() else (spec, "", "")
    if path.endswith(".npy"):
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DataError(f"{path}: cannot read it as a .npy array ({error})") from error
    table = read_table(path)
    if column and column not in table.columns:
        raise DataError(f"{path} has no column {column!r}; columns: {list(table.columns)}")
    return table[column or table.columns[0]].to_numpy()


def parse_baseline(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    baseline = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            baseline[name.strip()] = float(value)
        except ValueError:
            raise DataError(f"--baseline {text!r}: write it as metric=value pairs, e.g. r2=0.85,rmse=0.35") from None
    return baseline


def decision_json(decision: Decision) -> dict:
    features = {}
    if decision.drift is not None:
        for name, f in decision.drift.features.items():
            features[name] = {
                "type": f.kind, "test": f.test, "statistic": f.statistic, "p_value": f.p_value,
                "p_adjusted": f.p_adjusted, "effect": f.effect, "effect_name": f.effect_name, "psi": f.psi,
                "kl": f.kl, "js": f.js, "wasserstein": f.wasserstein, "outlier_share": f.outlier_share,
                "drifted": f.drifted, "method": f.method, "notes": f.notes,
            }
    report = decision.drift
    realized, concept = decision.signal("performance"), decision.signal("concept_drift")
    return {
        "retrain": decision.retrain,
        "trigger": decision.trigger,
        "severity": decision.severity,
        "confidence": decision.confidence,
        "urgency": decision.urgency,
        "policy": decision.policy,
        "reasons": decision.reasons,
        "insufficient_data": decision.insufficient_data,
        "signals": [s.to_dict() for s in decision.signals],
        "drifted_features": report.drifted_features if report else [],
        "drift_share": report.drift_share if report else 0.0,
        "aggregate_psi": report.aggregate_psi if report else 0.0,
        "features": features,
        "performance": None if realized is None else realized.to_dict(),
        "concept_drift": None if concept is None else concept.to_dict(),
    }


def render(decision: Decision) -> str:
    verdict = f"RETRAINING DECISION: {'YES' if decision.retrain else 'NO'}"
    width = len(verdict) + 4
    lines = ["+" + "-" * width + "+", f"|  {verdict}  |", "+" + "-" * width + "+"]
    lines.append(f"severity:   {decision.severity}   urgency: {decision.urgency}   confidence: {decision.confidence:.2f}"
                 f"   trigger: {decision.trigger or '-'}   policy: {decision.policy}")
    lines.append(f"reason:     {decision.reason}")
    lines += [f"signal:     {s.kind} [{s.status}] {s.detail}" for s in decision.signals]
    if decision.drift is not None:
        lines += ["", decision.drift.feature_markdown()]
    return "\n".join(lines)


def loss_reference(baseline: dict[str, float] | None, task: str, rows: int) -> LossReference | None:
    """The held-out loss a baseline implies, taken as measured on ``rows`` rows: classification
    ``1 - accuracy`` (Bernoulli variance); regression ``mae`` with the variance ``rmse^2 - mae^2``."""
    baseline = baseline or {}
    if task == "classification" and "accuracy" in baseline:
        accuracy = baseline["accuracy"]
        return LossReference(1.0 - accuracy, accuracy * (1.0 - accuracy), rows)
    if task == "regression" and "mae" in baseline:
        mae = baseline["mae"]
        spread = baseline["rmse"] ** 2 - mae ** 2 if "rmse" in baseline else mae ** 2
        return LossReference(mae, max(spread, 1e-12), rows)
    return None


def check_model(columns: list[str], numeric: list[str], task: str, policy: str) -> ModelSettings:
    """The settings ``retrain check`` decides with: the product's defaults for these columns."""
    features = [{"name": c, "type": "numeric" if c in numeric else "categorical"} for c in columns]
    target = "__actual__"
    return ModelSettings(name="check", task=task, target=target, features=features, decision={"policy": policy})


def run_check(args: argparse.Namespace) -> int:
    reference, current = read_table(args.reference), read_table(args.current)
    columns = [c.strip() for c in args.features.split(",")] if args.features else None
    if columns is None:
        columns = [c for c in reference.columns if c in current.columns]
        if not columns:
            raise DataError(f"{args.reference} and {args.current} share no columns")
    missing = [c for c in columns if c not in reference.columns or c not in current.columns]
    if missing:
        raise DataError(f"--features {missing} are not in both files")
    numeric = [c for c in columns if pd.api.types.is_numeric_dtype(reference[c].dtype) and not pd.api.types.is_bool_dtype(reference[c].dtype)]
    categorical = [c for c in columns if c not in numeric]
    predictions = read_vector(args.predictions) if args.predictions else None
    actuals = read_vector(args.actuals) if args.actuals else None
    if (predictions is None) != (actuals is None):
        raise DataError("--predictions and --actuals go together")
    model = check_model(columns, numeric, args.task, args.policy)
    profile = ReferenceProfile.from_frame(reference[columns], numeric, categorical, model.drift)
    # No model to weigh features by: every feature counts the same; the threshold is calibrated on
    # chunks of the reference file the size of the current one.
    weights = {c: 1.0 / len(columns) for c in columns}
    calibration = calibrate_drift(profile, reference[columns], weights, len(current), model.decision.calibration_chunks)
    baseline = parse_baseline(args.baseline)
    loss = loss_reference(baseline, args.task, len(reference))
    pack = ReferencePack(args.task, loss, weights, calibration, None)
    drift = detect_drift(profile, current[columns], model.drift, numeric, categorical)
    # CUR is the data a retrain would be given: the window it would train on is CUR itself.
    evidence = Evidence(args.task, drift=drift, pack=pack, baseline=baseline,
                        retrain_window_drift=weighted_drift({c: f.psi for c, f in drift.features.items() if not f.skipped},
                                                            weights))
    if predictions is not None:
        evidence.outcomes = Outcomes(np.asarray(predictions), np.asarray(actuals), newest_batch=len(predictions))
    decision = decide(evidence, model)
    print(json.dumps(decision_json(decision), indent=2, default=float) if args.json else render(decision))
    return 0
