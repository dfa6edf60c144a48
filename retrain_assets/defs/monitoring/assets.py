"""Per-model monitoring: one run gathers every piece of evidence about the production model, and one pure
function decides (:func:`retrain_assets.monitoring.decide`).

The monitor job materializes three assets from one step, so the decision and its evidence always belong
together: ``drift_report`` (recent inputs against the production model's training data, importance-weighted
against its calibrated threshold, with the per-feature table and picture), ``performance_report`` (the
production model's rows labeled since its deployment, scored by the model itself, against its held-out
error: Page-Hinkley, the newest batch, the large-drop thresholds, concept drift, and the accuracy its
confidence predicts while labels are late) and ``retrain_decision`` (the verdict, the deciding signal, and
every signal with its statistic and threshold). The trigger sensor reads ``retrain_decision``.

Heavy statistics run here, inside a run; the sensor only refreshes the cheap signals (label count, age).
"""

import datetime as dt
from dataclasses import dataclass

import dagster as dg
import numpy as np

from retrain_assets.defs.keys import asset_key, short
from retrain_assets.defs.schedules import monitoring_freshness
from retrain_assets.defs.metadata import ROW_COUNT, frame_table, markdown_image, md_table, metric_metadata
from retrain_assets.defs.resources import ArtifactStoreResource, DataSourceResource, MonitoringStoreResource
from retrain_assets.errors import StoreError
from retrain_assets.monitoring import Decision, ReferencePack, ReferenceProfile, decide, gather_evidence
from retrain_assets.monitoring.decision import Evidence, worthwhile_labels
from retrain_assets.settings import ModelSettings

DECISION = "retrain_decision"


def _production(store, model: ModelSettings):
    production = store.registry.production(model.name)
    if production is None:
        raise StoreError(
            f"model {model.name} has no production model yet, so there is nothing to monitor: run the "
            f"{model.name}_retrain job first"
        )
    return production


def _value(metadata, key, default=None):
    entry = metadata.get(key)
    return default if entry is None else entry.value


@dataclass(frozen=True)
class Watermarks:
    """Where the evidence of this run starts: labels after ``since`` count as unseen by production; those
    after ``previous`` arrived since the previous decision (the newest batch)."""

    since: int | None
    previous: int | None
    challenged_at: dt.datetime  # promotion, or the newest retrain that failed to replace it
    failure: list[str]


def watermarks(store, model: ModelSettings, production, dataset, previous_decision) -> Watermarks:
    """Evidence already acted on does not count twice: after a failed retrain, only newer labels count."""
    since, challenged, failure = dataset.max_label_id, production.promoted_at or production.created_at, []
    failed = store.registry.last_failed_retrain(model.name)
    if failed is not None:
        failed_dataset, failure = failed
        if failed_dataset.max_label_id is not None and (since is None or failed_dataset.max_label_id > since):
            since = failed_dataset.max_label_id
        challenged = max(challenged, failed_dataset.created_at)
    previous = None
    if previous_decision is not None:
        metadata = previous_decision.asset_materialization.metadata
        if _value(metadata, "production_version") == production.label:
            previous = _value(metadata, "label_watermark")
    return Watermarks(since, previous, challenged, failure)


def gather(store, artifacts, source, model: ModelSettings, production, previous_decision, now: dt.datetime):
    """The evidence about ``production`` now, the window it was computed on, and the watermarks."""
    from retrain_assets.serving.predict import load_version

    dataset = store.registry.dataset(model.name, production.dataset_tag)
    profile = ReferenceProfile.from_json(artifacts.load_text(dataset.profile_key, dataset.profile_sha256))
    pack = None
    if production.reference_key:
        pack = ReferencePack.from_json(artifacts.load_text(production.reference_key, production.reference_sha256))
    pipeline = load_version(artifacts, production)
    marks = watermarks(store, model, production, dataset, previous_decision)
    labeled = source.labeled_rows_after(marks.since, model.decision.max_labeled_rows)
    newest = len(labeled) if marks.previous is None else int((labeled["label_id"] > marks.previous).sum())
    recent = source.recent_inputs(model.monitoring.window_rows, model.monitoring.window_hours)
    cap = max(worthwhile_labels(dataset.rows, model), model.triggers.new_labels_now)
    new_labels = source.count_labels_after(dataset.max_label_id, cap=cap)
    previous_warnings, verified_at = (), None
    if previous_decision is not None and marks.previous is not None:  # the previous decision judged this model
        metadata = previous_decision.asset_materialization.metadata
        previous_warnings = tuple(_value(metadata, "warnings", []) or [])
        verified_at = verified_time(metadata)
    evidence = gather_evidence(
        model, pipeline=pipeline, profile=profile, pack=pack, recent=recent, labeled=labeled, newest_batch=newest,
        baseline=production.baseline, new_labels=new_labels, training_rows=dataset.rows,
        model_age_days=(now - marks.challenged_at) / dt.timedelta(days=1), previous_warnings=previous_warnings,
        days_since_verified=None if verified_at is None else (now - verified_at) / dt.timedelta(days=1),
    )
    watermark = int(labeled["label_id"].max()) if len(labeled) else marks.previous
    return evidence, profile, recent, dataset, marks, watermark, verified_at


def verified_time(metadata) -> dt.datetime | None:
    """When a decision last judged the production model on a fresh labeled batch (its age clock)."""
    stamp = _value(metadata, "verified_at")
    return dt.datetime.fromisoformat(stamp) if stamp else None


def signals_table(decision: Decision) -> str:
    """Every signal as the decision judged it, for the UI."""
    def cell(value):
        if value is None or (isinstance(value, float) and not np.isfinite(value)):
            return "-"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| signal | status | test | value | threshold | evidence |", "|---|---|---|---|---|---|"]
    for s in decision.signals:
        detail = s.detail.replace("|", "/")
        lines.append(f"| {s.kind} | {s.status} | {s.test} | {cell(s.value)} | {cell(s.threshold)} | {detail} |")
    return "\n".join(lines)


def decision_metadata(decision: Decision) -> dict:
    """What the decision asset carries, and what the trigger sensor reads back."""
    return {
        "retrain_advised": bool(decision.retrain),
        "trigger": decision.trigger or "none",
        "severity": decision.severity,
        "confidence": float(decision.confidence),
        "urgency": decision.urgency,
        "policy": decision.policy,
        "summary": dg.MetadataValue.text(short(decision.reason)),
        "reason": dg.MetadataValue.md(decision.reason),
        "signals": dg.MetadataValue.md(signals_table(decision)),
        "signals_json": dg.MetadataValue.json([s.to_dict() for s in decision.signals]),
        "warnings": dg.MetadataValue.json(list(decision.warnings)),
        "insufficient_data": bool(decision.insufficient_data),
    }


def prediction_drift_metadata(decision: Decision) -> dict:
    """The model's own output against its held-out rows (seed 003's prediction drift), for the drift report."""
    signal = decision.signal("prediction_drift")
    if signal is None:
        return {}
    out = {"prediction_drift": dg.MetadataValue.text(short(signal.detail))}
    if signal.status != "unavailable":
        out |= {"prediction_psi": float(signal.value), "prediction_psi_threshold": float(signal.threshold)}
    return out


def _drift_result(context, store, artifacts, model: ModelSettings, evidence: Evidence, decision: Decision, profile,
                  recent, dataset, production) -> dg.MaterializeResult | None:
    report = evidence.drift
    if report is None:
        context.log.warning(f"no drift report for {model.name}: {evidence.unavailable.get('drift', 'no recent inputs')}")
        return None
    drifted = list(report.drifted_features)
    store.history.record_drift_alerts(
        model.name,
        [{"feature": f.feature, "test": f.test, "statistic": f.statistic, "p_value": f.p_value,
          "psi": f.psi, "effect": f.effect} for f in (report.features[name] for name in drifted)],
        severity=decision.severity, run_id=context.run.run_id,
    )
    # matplotlib loads here, in the monitor run, not with the code location (sensors never need it).
    from retrain_assets.monitoring.drift_plot import drift_picture

    png = drift_picture(profile, recent[model.feature_names], report)
    stored = artifacts.put_bytes(png, ".png")
    signal = decision.signal("drift")
    weighted = signal.metrics if signal is not None and signal.status != "unavailable" else {}
    return dg.MaterializeResult(
        asset_key=asset_key(model.name, "drift_report"),
        metadata={
            "drift_signal": signal.status if signal else "unavailable",
            "drift_evidence": dg.MetadataValue.text(short(signal.detail if signal else "")),
            **({"weighted_psi": float(weighted["weighted_psi"]), "drift_threshold": float(weighted["threshold"]),
                "drift_ratio": float(weighted["ratio"])} if weighted else {}),
            "drifted_features": dg.MetadataValue.json(drifted),
            "drift_share": float(report.drift_share),
            "aggregate_psi": float(report.aggregate_psi),
            ROW_COUNT: int(report.current_rows),
            "reference_dataset": dataset.tag,
            "production_version": production.label,
            "features": frame_table(report.feature_table()),
            **prediction_drift_metadata(decision),
            # Inline, so the UI opens it from the metadata table without file access; also kept as a file.
            "distributions": markdown_image(png, "reference vs current distributions"),
            "distributions_png": dg.MetadataValue.path(str(artifacts.path_of(stored.key))),
        },
    )


def _performance_result(context, store, model: ModelSettings, evidence: Evidence, decision: Decision,
                        production) -> dg.MaterializeResult:
    realized = decision.signal("performance")
    metrics = (realized.metrics or {}) if realized else {}
    current = metrics.get("metrics") or {}
    concept = decision.signal("concept_drift")
    labeled = 0 if evidence.outcomes is None else len(evidence.outcomes)
    if current:
        store.history.record_metrics(
            model.name, production.version, labeled, current, production.baseline,
            concept_drift=bool(concept is not None and concept.status in ("weak", "retrain")),
            degraded=bool(realized is not None and realized.status == "retrain"), run_id=context.run.run_id,
        )
    tests = {k: metrics[k] for k in ("page_hinkley", "newest_batch", "since_deployment") if isinstance(metrics.get(k), dict)}
    estimated = decision.signal("estimated_performance")
    return dg.MaterializeResult(
        asset_key=asset_key(model.name, "performance_report"),
        metadata={
            "performance_signal": realized.status if realized else "unavailable",
            "performance_evidence": dg.MetadataValue.text(short(realized.detail if realized else "")),
            "labeled_since_deployment": labeled,
            "production_version": production.label,
            "realized_tests": dg.MetadataValue.md(md_table(
                {name: round(t["statistic"], 4) for name, t in tests.items()},
                {name: f"{'>' if name == 'page_hinkley' else 'z >'} {t['threshold']:.4g}" for name, t in tests.items()},
            )) if tests else dg.MetadataValue.md(f"_{realized.detail if realized else 'no realized tests'}_"),
            "metrics_vs_baseline": dg.MetadataValue.md(md_table(
                {k: round(v, 4) for k, v in current.items()},
                {k: round(float(v), 4) for k, v in production.baseline.items() if k in current},
            )),
            **metric_metadata(current, prefix="current_"),
            "estimated_performance": dg.MetadataValue.text(short(estimated.detail if estimated else "")),
            "concept_drift": dg.MetadataValue.text(short(concept.detail if concept else "")),
        },
    )


def build_monitoring_assets(model: ModelSettings) -> list:
    common = {"group_name": model.name, "owners": list(model.owners), "tags": {"domain": "monitoring"},
              "freshness_policy": monitoring_freshness(model)}
    production_key = asset_key(model.name, "production_model")
    drift_key, performance_key = asset_key(model.name, "drift_report"), asset_key(model.name, "performance_report")
    specs = [
        dg.AssetSpec(
            drift_key, deps=[production_key], skippable=True, kinds={"pandas", "scipy", "matplotlib"},
            description=(
                f"Data drift of `{model.name}`: its last {model.monitoring.window_rows} inputs (data source "
                f"`{model.data_source.kind}`) against the profile of the production model's training data: per-feature "
                "tests (BH-corrected, effect-size floors), and the importance-weighted PSI against the threshold "
                "calibrated on the model's own training window."
            ),
            **common,
        ),
        dg.AssetSpec(
            performance_key, deps=[production_key], kinds={"pandas", "scikitlearn"},
            description=(
                f"How the production model of `{model.name}` does on the rows labeled since its deployment (scored by "
                "the model itself), against the error it showed on its held-out rows: Page-Hinkley, the newest labeled "
                "batch, the large-drop thresholds against its baseline, concept drift; and the accuracy its confidence "
                "predicts on the newest inputs (CBPE)."
            ),
            **common,
        ),
        dg.AssetSpec(
            asset_key(model.name, DECISION), deps=[drift_key, performance_key], kinds={"pandas", "scipy"},
            description=(
                f"The one retrain decision for `{model.name}` (policy `{model.decision.policy}`): the verdict, the "
                "deciding signal, severity and confidence, and every signal with its statistic and threshold. "
                f"{model.name}_retrain_sensor acts on it."
            ),
            **common,
        ),
    ]

    @dg.multi_asset(name=f"{model.name}_monitoring_reports", specs=specs)
    def monitoring_reports(
        context: dg.AssetExecutionContext,
        monitoring_store: MonitoringStoreResource,
        artifact_store: ArtifactStoreResource,
        data_source: DataSourceResource,
    ):
        store, artifacts, source = monitoring_store.get(), artifact_store.get(), data_source.for_model(model)
        production = _production(store, model)
        previous = context.instance.get_latest_materialization_event(asset_key(model.name, DECISION))
        now = dt.datetime.now(dt.timezone.utc)
        evidence, profile, recent, dataset, marks, watermark, verified_at = gather(
            store, artifacts, source, model, production, previous, now)
        decision = decide(evidence, model)
        verified_at = now if decision.verified else verified_at
        context.log.info(f"{model.name}: {'RETRAIN' if decision.retrain else 'no retrain'} ({decision.severity}): "
                         f"{decision.reason}")
        drift = _drift_result(context, store, artifacts, model, evidence, decision, profile, recent, dataset, production)
        if drift is not None:
            yield drift
        yield _performance_result(context, store, model, evidence, decision, production)
        yield dg.MaterializeResult(
            asset_key=asset_key(model.name, DECISION),
            metadata={
                **decision_metadata(decision),
                "production_version": production.label,
                "label_watermark": watermark,
                "verified_at": verified_at.isoformat() if verified_at else "",
                "evidence_since_label": marks.since,
                "last_failed_retrain": dg.MetadataValue.json(marks.failure),
                "unavailable": dg.MetadataValue.json(evidence.unavailable),
            },
        )

    return [monitoring_reports]
