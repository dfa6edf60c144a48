"""Per-model monitoring: the drift report compares recent traffic with the production model's training data.

Heavy statistics run here, inside a run; the sensors only read the report's metadata.
"""

import dagster as dg

from retrain_assets.defs.keys import asset_key
from retrain_assets.defs.metadata import md_table
from retrain_assets.defs.resources import ArtifactStoreResource, MonitoringStoreResource
from retrain_assets.errors import DataError, StoreError
from retrain_assets.monitoring import ReferenceProfile, should_retrain
from retrain_assets.settings import ModelSettings


def build_monitoring_assets(model: ModelSettings) -> list:
    drift_key = asset_key(model.name, "drift_report")

    @dg.asset(
        key=drift_key,
        group_name=model.name,
        deps=[asset_key(model.name, "production_model")],
        description=(
            f"Data drift of `{model.name}`: the last {model.monitoring.window_rows} served rows against the "
            "profile of the production model's training data (per-feature tests, BH-corrected, with effect-size "
            "floors). drift_sensor requests a retrain when it says drift."
        ),
        kinds={"pandas", "scipy"},
        owners=list(model.owners),
        tags={"domain": "monitoring"},
    )
    def drift_report(
        context: dg.AssetExecutionContext,
        monitoring_store: MonitoringStoreResource,
        artifact_store: ArtifactStoreResource,
    ) -> dg.MaterializeResult:
        store, artifacts = monitoring_store.get(), artifact_store.get()
        production = store.registry.production(model.name)
        if production is None:
            raise StoreError(
                f"model {model.name} has no production model yet, so there is no reference to compare traffic "
                f"with: run the {model.name}_retrain job first"
            )
        dataset = store.registry.dataset(model.name, production.dataset_tag)
        profile = ReferenceProfile.from_json(artifacts.load_text(dataset.profile_key, dataset.profile_sha256))
        current = store.predictions.recent_window(
            model.log_key, model.feature_names, rows=model.monitoring.window_rows, hours=model.monitoring.window_hours
        )
        if current.empty:
            raise DataError(
                f"no recent predictions of model {model.name} in the prediction log: check that serving logs to "
                "the monitoring store (RETRAIN_DATABASE_URL) and monitoring.window_hours in retrain.yaml"
            )
        decision = should_retrain(
            profile,
            current[model.feature_names],
            task=model.task,
            drift=model.drift,
            performance=model.performance,
            numeric=model.numeric_features,
            categorical=model.categorical_features,
        )
        report = decision.drift
        drifted = list(report.drifted_features) if report is not None else []
        return dg.MaterializeResult(
            metadata={
                "drift_detected": bool(decision.triggered),
                "severity": decision.severity.value if decision.triggered else "NONE",
                "confidence": float(decision.confidence),
                "urgency": str(decision.urgency),
                "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons) or "- no drift"),
                "drifted_features": dg.MetadataValue.json(drifted),
                "drift_share": float(report.drift_share) if report is not None else 0.0,
                "aggregate_psi": float(report.aggregate_psi) if report is not None else 0.0,
                "rows_current": len(current),
                "reference_dataset": dataset.tag,
                "production_version": production.label,
                "features": dg.MetadataValue.md(report.feature_markdown() if report is not None else "no report"),
            }
        )

    return [drift_report]
