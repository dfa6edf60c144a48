"""Per-model monitoring reports: drift (recent traffic vs the production model's training data) and
performance (the production model's labeled predictions vs its baseline, plus concept drift).

Heavy statistics run here, inside a run; the trigger sensors only read the reports' metadata.
"""

import base64

import dagster as dg
import numpy as np

from retrain_assets.defs.keys import asset_key, short
from retrain_assets.defs.metadata import md_table, metric_metadata
from retrain_assets.defs.resources import ArtifactStoreResource, DataSourceResource, MonitoringStoreResource
from retrain_assets.errors import DataError, StoreError
from retrain_assets.monitoring import ReferenceProfile, RetrainDecision
from retrain_assets.monitoring.policy import drift_decision, performance_decision, severity_name
from retrain_assets.settings import ModelSettings


def decision_metadata(decision: RetrainDecision) -> dict:
    """What every report shares, and what the trigger sensors read: advice, severity, why."""
    signals = {s.kind: s.strength for s in decision.signals}
    return {
        "retrain_advised": bool(decision.triggered),
        "severity": severity_name(decision),
        "confidence": float(decision.confidence),
        "urgency": str(decision.urgency),
        "summary": dg.MetadataValue.text(short("; ".join(decision.reasons))),
        "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
        "signals": dg.MetadataValue.json(signals),
        "insufficient_data": bool(decision.insufficient_data),
    }


def _production(store, model: ModelSettings):
    production = store.registry.production(model.name)
    if production is None:
        raise StoreError(
            f"model {model.name} has no production model yet, so there is nothing to monitor: run the "
            f"{model.name}_retrain job first"
        )
    return production


def build_monitoring_assets(model: ModelSettings) -> list:
    drift_key = asset_key(model.name, "drift_report")
    performance_key = asset_key(model.name, "performance_report")

    @dg.asset(
        key=drift_key,
        group_name=model.name,
        deps=[asset_key(model.name, "production_model")],
        description=(
            f"Data drift of `{model.name}`: its last {model.monitoring.window_rows} inputs (data source "
            f"`{model.data_source.kind}`) against the "
            "profile of the production model's training data (per-feature tests, BH-corrected, with effect-size "
            "floors). drift_sensor requests a retrain when it advises one."
        ),
        kinds={"pandas", "scipy"},
        owners=list(model.owners),
        tags={"domain": "monitoring"},
    )
    def drift_report(
        context: dg.AssetExecutionContext,
        monitoring_store: MonitoringStoreResource,
        artifact_store: ArtifactStoreResource,
        data_source: DataSourceResource,
    ) -> dg.MaterializeResult:
        store, artifacts = monitoring_store.get(), artifact_store.get()
        production = _production(store, model)
        dataset = store.registry.dataset(model.name, production.dataset_tag)
        profile = ReferenceProfile.from_json(artifacts.load_text(dataset.profile_key, dataset.profile_sha256))
        source = data_source.for_model(model)
        current = source.recent_inputs(model.monitoring.window_rows, model.monitoring.window_hours)
        if current.empty:
            raise DataError(
                f"no recent inputs of model {model.name} in its data source ({source.describe()}): check that "
                "serving logs to it (RETRAIN_DATABASE_URL, data_source in retrain.yaml) and monitoring.window_hours"
            )
        decision = drift_decision(profile, current, model)
        report = decision.drift
        drifted = list(report.drifted_features) if report is not None else []
        if report is not None:
            store.history.record_drift_alerts(
                model.name,
                [{"feature": f.feature, "test": f.test, "statistic": f.statistic, "p_value": f.p_value,
                  "psi": f.psi, "effect": f.effect} for f in (report.features[name] for name in drifted)],
                severity=decision.severity.value, run_id=context.run.run_id,
            )
        picture = {}
        if report is not None:
            # matplotlib loads here, in the monitor run, not with the code location (sensors never need it).
            from retrain_assets.monitoring.drift_plot import drift_picture

            png = drift_picture(profile, current, report)
            stored = artifacts.put_bytes(png, ".png")
            picture = {
                # Inline, so the UI opens it from the metadata table without file access; also kept as a file.
                "distributions": dg.MetadataValue.md(
                    f"![reference vs current distributions](data:image/png;base64,{base64.b64encode(png).decode()})"
                ),
                "distributions_png": dg.MetadataValue.path(str(artifacts.path_of(stored.key))),
            }
        return dg.MaterializeResult(
            metadata={
                **decision_metadata(decision),
                **picture,
                "drifted_features": dg.MetadataValue.json(drifted),
                "drift_share": float(report.drift_share) if report is not None else 0.0,
                "aggregate_psi": float(report.aggregate_psi) if report is not None else 0.0,
                "rows_current": len(current),
                "reference_dataset": dataset.tag,
                "production_version": production.label,
                "features": dg.MetadataValue.md(report.feature_markdown() if report is not None else "no report"),
            }
        )

    @dg.asset(
        key=performance_key,
        group_name=model.name,
        deps=[asset_key(model.name, "production_model")],
        description=(
            f"How the production model of `{model.name}` does on its newest {model.monitoring.window_rows} labeled "
            "predictions, against the metrics it had at promotion (its baseline), plus windowed concept drift. "
            "performance_sensor requests a retrain when it degrades."
        ),
        kinds={"pandas", "sklearn"},
        owners=list(model.owners),
        tags={"domain": "monitoring"},
    )
    def performance_report(context: dg.AssetExecutionContext, monitoring_store: MonitoringStoreResource) -> dg.MaterializeResult:
        store = monitoring_store.get()
        production = _production(store, model)
        outcomes = store.predictions.served_outcomes(model.log_key, production.version, last_rows=model.monitoring.window_rows)
        outcomes = outcomes[outcomes["prediction"].notna() & outcomes["label"].notna()]
        scores = outcomes["score"].to_numpy(dtype=float) if model.task == "classification" else None
        if scores is not None and np.isnan(scores).any():
            scores = None
        decision = performance_decision(outcomes["prediction"].to_numpy(), outcomes["label"].to_numpy(),
                                        production.baseline, model, scores)
        current = (decision.performance or {}).get("metrics", {})
        store.history.record_metrics(
            model.name, production.version, len(outcomes), current, production.baseline,
            concept_drift=bool((decision.concept or {}).get("detected")),
            degraded=bool((decision.performance or {}).get("degraded")), run_id=context.run.run_id,
        )
        return dg.MaterializeResult(
            metadata={
                **decision_metadata(decision),
                "labeled_predictions": len(outcomes),
                "production_version": production.label,
                "metrics_vs_baseline": dg.MetadataValue.md(md_table(
                    {k: round(v, 4) for k, v in current.items()},
                    {k: round(float(v), 4) for k, v in production.baseline.items() if k in current},
                )),
                **metric_metadata(current, prefix="current_"),
                "concept_drift": dg.MetadataValue.json(decision.concept or {}),
            }
        )

    return [drift_report, performance_report]
