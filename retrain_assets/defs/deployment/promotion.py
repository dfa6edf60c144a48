"""Promotion: make a gated candidate the production model, in one registry transaction, and say so.

Used by the retrain job's ``production_model`` asset and by the shadow decision job, so a promotion looks
the same in the registry, the events table and the asset's metadata whichever way it happened.
"""

import dagster as dg

from retrain_assets.defs.metadata import md_table, metric_metadata
from retrain_assets.settings import ModelSettings
from retrain_assets.store import ModelVersion, MonitoringStore
from retrain_assets.store.events import completion


def improvement_over_production(gate_results: list[dict]) -> dict:
    """Event columns comparing the promoted model with the one it replaced, both scored on the same new
    test rows (from the relative gate); positive percentages are improvements (RMSE: lower is better)."""
    relative = next((g for g in gate_results if g["name"] == "relative_to_production" and g["applicable"]), None)
    if relative is None:
        return {}
    value = relative["value"]

    def change(metric: str, lower_is_better: bool = False) -> float | None:
        new, old = value.get(f"candidate_{metric}"), value.get(f"production_{metric}")
        if new is None or old is None or old == 0:
            return None
        return round(100.0 * ((old - new) if lower_is_better else (new - old)) / abs(old), 4)

    return {
        "comparison_previous_r2": value.get("production_r2"),
        "improvement_r2_percent": change("r2"),
        "improvement_rmse_percent": change("rmse", lower_is_better=True),
        "improvement_accuracy_percent": change("accuracy"),
    }


def promote_candidate(
    store: MonitoringStore, model: ModelSettings, candidate: ModelVersion, run_id: str, event_id: str | int | None,
    trigger: str, reason: str,
) -> tuple[ModelVersion | None, dict]:
    """Promote ``candidate`` (the previous production model becomes the standby) and complete its retraining
    event in the same transaction; return (previous, metadata for the production_model materialization)."""
    gates = candidate.gate_results or []
    outcome = completion(
        True,
        retraining_model_version=candidate.label,
        retraining_accuracy=candidate.metrics.get("accuracy"),
        retraining_r2=candidate.metrics.get("r2"),
        retraining_rmse=candidate.metrics.get("rmse"),
        gate_summary={g["name"]: g["passed"] for g in gates},
        execution_metrics={"run_id": run_id, "metrics": candidate.metrics},
        **improvement_over_production(gates),
    )
    previous = store.registry.promote(model.name, candidate.version, run_id=run_id,
                                      event_id=int(event_id) if event_id else None, event_outcome=outcome)
    metadata = {
        "promoted_version": candidate.label,
        "previous_version": previous.label if previous else "none",
        "dataset_version": candidate.dataset_tag,
        "trigger": trigger,
        "reason": dg.MetadataValue.text(reason),
        **metric_metadata(candidate.metrics, prefix=""),
        "gates": dg.MetadataValue.md(md_table({g["name"]: "passed" if g["passed"] else "FAILED" for g in gates}, None)),
    }
    return previous, metadata
