"""The model card: what the production model is for, what it was trained on, how it compares, its limits."""

import datetime as dt

import dagster as dg

from retrain_assets.defs.keys import asset_key
from retrain_assets.defs.metadata import URI, md_table
from retrain_assets.defs.resources import ArtifactStoreResource, MonitoringStoreResource
from retrain_assets.errors import StoreError
from retrain_assets.monitoring.watch import deployment_phase
from retrain_assets.settings import ModelSettings


def deployment_lines(model: ModelSettings, production, now: dt.datetime) -> list[str]:
    """Where the model stands after its promotion: its phase, until when, and what can still roll it back."""
    if production.promoted_at is None:
        return ["- not promoted"]
    settings = model.deployment
    phase, until = deployment_phase(production.promoted_at, production.proven_at, now, settings)
    criteria = [c for c in (
        f"live accuracy < {settings.rollback_min_accuracy}" if model.task == "classification" and settings.rollback_min_accuracy else "",
        f"p99 latency > {settings.rollback_max_latency_ms:g} ms" if settings.rollback_max_latency_ms else "",
        f"error rate > {settings.rollback_max_error_rate:.0%}" if settings.rollback_max_error_rate else "") if c]
    explain = {
        "watch": "compared live with the previous model (F1 or MAE, p99 latency) and the absolute criteria "
                 f"({', '.join(criteria) or 'none'}); a failure rolls it back",
        "close_watch": f"the absolute criteria ({', '.join(criteria) or 'none'}) roll it back",
        "validation": "no automatic rollback; proven when the period ends",
        "proven": f"proven {production.proven_at:%Y-%m-%d %H:%M} UTC; its live metrics are the baseline" if production.proven_at else "",
    }[phase]
    return [f"- phase: **{phase.replace('_', ' ')}**" + (f" until {until:%Y-%m-%d %H:%M} UTC" if until else "") + f": {explain}",
            f"- phases: watch {settings.watch_minutes:g} min, close watch to {settings.close_watch_hours:g} h, "
            f"validation to {settings.validation_days:g} days after the promotion"]


def model_card_markdown(model: ModelSettings, production, previous, dataset,
                        now: dt.datetime | None = None, canary=None) -> str:
    gates = production.gate_results or []
    fairness = next((g for g in gates if g["name"] == "fairness"), None)
    lines = [
        f"# {model.name} {production.label}",
        "",
        "## Intended use",
        model.description or f"A {model.task} model predicting `{model.target}`.",
        "",
        "## Training",
        f"- trained {production.created_at:%Y-%m-%d %H:%M} UTC, promoted "
        f"{production.promoted_at:%Y-%m-%d %H:%M} UTC" if production.promoted_at else "- not promoted",
        f"- dataset {dataset.tag} ({dataset.rows:,} rows, sha256 {dataset.content_hash[:12]}), "
        f"time range {' to '.join(dataset.summary.get('time_range', ['?', '?']))}",
        f"- estimator {model.estimator.type}, parameters {production.params}",
        f"- trigger: {production.trigger or 'manual'} ({production.reason or 'no reason given'})",
        "",
        "## Deployment",
        *deployment_lines(model, production, now or dt.datetime.now(dt.timezone.utc)),
        *([f"- canary: {canary.label} answers {100 * (canary.traffic_share or 0):g} % of live requests (steps "
           f"{', '.join(f'{100 * s:g} %' for s in model.deployment.canary_steps)}; this model answers the rest)"]
          if canary is not None else []),
        "",
        "## Metrics (test split of its dataset)",
        md_table({k: round(v, 4) for k, v in production.metrics.items()},
                 {k: round(v, 4) for k, v in (previous.metrics if previous else {}).items()} or None)
        + ("\n\n(third column: the previous production model, on its own test split)" if previous else ""),
        "",
        "## Evaluation gates",
        md_table({g["name"]: ("passed" if g["passed"] else "FAILED") + ("" if g.get("applicable", True) else " (n/a)")
                  for g in gates}, None),
        "",
        "## Fairness slices",
    ]
    if fairness and fairness.get("applicable"):
        for key, groups in fairness["value"].items():
            if key.endswith("_groups"):
                lines.append(f"- {key[:-7]}: " + ", ".join(f"{g} {v:.3f}" for g, v in groups.items()))
    else:
        lines.append("- no sensitive columns configured (gates.sensitive_columns)")
    lines += [
        "",
        "## Limitations",
        f"- trained on traffic up to the dataset's newest row; drift is watched every "
        f"`{model.triggers.monitoring_cron}` and triggers a retrain when it matters",
        "- metrics are from a held-out split of the same period, not from future traffic",
        f"- categorical levels unseen in training are treated as missing; features: {', '.join(model.feature_names)}",
    ]
    return "\n".join(lines)


def model_card_record(store, artifacts, model: ModelSettings) -> tuple[dict, dg.DataVersion]:
    """The card of the current production model, stored as an artifact: the model_card materialization's
    metadata and data version. Every change of production (promotion, rollback, shadow or canary promotion) records
    one, so the card never describes a model that no longer serves."""
    production = store.registry.production(model.name)
    if production is None:
        raise StoreError(f"model {model.name} has no production model to describe: run {model.name}_retrain first")
    previous = store.registry.with_status(model.name, "standby")
    card = model_card_markdown(model, production, previous, store.registry.dataset(model.name, production.dataset_tag),
                               canary=store.registry.with_status(model.name, "canary"))
    stored = artifacts.put_text(card, ".md")
    metadata = {"card": dg.MetadataValue.md(card), "model_version": production.label, URI: artifacts.uri_of(stored.key)}
    return metadata, dg.DataVersion(stored.sha256)


def model_card_materialization(store, artifacts, model: ModelSettings, why: str) -> dg.AssetMaterialization:
    """The card refreshed by a job that changed production outside the model_card asset (rollback, shadow)."""
    metadata, _ = model_card_record(store, artifacts, model)
    return dg.AssetMaterialization(asset_key=asset_key(model.name, "model_card"), description=why, metadata=metadata)


def build_model_card(model: ModelSettings) -> dg.AssetsDefinition:
    @dg.asset(
        key=asset_key(model.name, "model_card"),
        group_name=model.name,
        deps=[asset_key(model.name, "production_model")],
        description=f"Model card of the production `{model.name}` model: intended use, data, metrics vs the "
                    "previous model, gates, fairness slices, limitations.",
        owners=list(model.owners),
        tags={"domain": "deployment"},
    )
    def model_card(context: dg.AssetExecutionContext, monitoring_store: MonitoringStoreResource,
                   artifact_store: ArtifactStoreResource) -> dg.MaterializeResult:
        metadata, version = model_card_record(monitoring_store.get(), artifact_store.get(), model)
        return dg.MaterializeResult(metadata=metadata, data_version=version)

    return model_card
