"""The dataset step of a retrain: ``training_dataset`` (labeled rows from the model's data source, cleaned,
windowed, split and versioned by content hash) and its blocking Great Expectations checks, so training
never runs on bad data."""

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from retrain_assets.defs.keys import asset_key, run_trigger
from retrain_assets.defs.metadata import COLUMN_SCHEMA, ROW_COUNT, URI, table_schema
from retrain_assets.defs.resources import ArtifactStoreResource, DataSourceResource, MonitoringStoreResource
from retrain_assets.defs.training.stored import (
    SPLIT_COLUMN,
    WEIGHT_COLUMN,
    column_roles,
    load_dataset,
    reference_of_production,
)
from retrain_assets.defs.triggers.requests import event_of_run, fail_retrain, open_run_event
from retrain_assets.errors import DataError, StoreError
from retrain_assets.monitoring import ReferenceProfile
from retrain_assets.settings import ModelSettings
from retrain_assets.training import (
    QUALITY_CHECKS,
    clean_labeled_rows,
    content_hash,
    dataset_summary,
    quality_requirements,
    quality_status,
    select_window,
    split_dataset,
    validate_training_data,
)


class RetrainRequest(dg.Config):
    """Why this retrain was asked for; filled in the launchpad for a manual retrain."""

    reason: str = ""
    requester: str = ""
    data_version: str = Field(
        "latest",
        description="'latest': a new dataset from the data source. A dataset version (its tag, e.g. v7-2026-12-01, "
                    "or v7): train again on exactly those rows and splits, re-read from the artifact store and "
                    "verified by their hash (a reproducible retrain).")


def reuse_dataset(store, artifacts, model: ModelSettings, version: str, run_id: str, reason: str):
    """The dataset ``version`` again, for this run: its stored rows (sha256-checked as they are read, then
    their content hash recomputed against the registry's) under a new version row that names its source,
    so the checks and the candidate of this run read it like any other."""
    original = store.registry.find_dataset(model.name, version)
    frame = artifacts.load_frame(original.artifact_key, original.artifact_sha256)
    columns = [*model.feature_names, model.target, "timestamp", "request_id"]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"dataset {original.tag} of {model.name} lacks the columns {missing} the model declares now: "
                        "retrain on 'latest', or restore the model's features in retrain.yaml")
    digest = content_hash(frame[columns])
    if digest != original.content_hash:
        raise StoreError(f"dataset {original.tag} of {model.name} does not match its recorded content hash "
                         f"({digest[:12]} != {original.content_hash[:12]}): it cannot be reproduced; retrain on 'latest'")
    copy = store.registry.record_dataset(
        model.name, content_hash=original.content_hash, artifact_key=original.artifact_key,
        artifact_sha256=original.artifact_sha256, profile_key=original.profile_key, profile_sha256=original.profile_sha256,
        rows=original.rows, max_label_id=original.max_label_id, summary=original.summary,
        source_query=f"{original.tag} again (same rows and splits, hash verified): {reason}", run_id=run_id)
    return original, copy, frame


def build_training_dataset(model: ModelSettings) -> dg.AssetsDefinition:
    """The model's training_dataset asset."""
    dataset_key = asset_key(model.name, "training_dataset")

    @dg.asset(
        key=dataset_key,
        group_name=model.name,
        description=(
            f"Labeled rows of model `{model.name}` from its data source (`{model.data_source.kind}`; quality-filtered, de-duplicated, "
            f"strategy `{model.dataset.strategy}`), split train/validation/test and versioned by content hash."
        ),
        kinds={"pandas", "parquet", "greatexpectations"},
        owners=list(model.owners),
        tags={"domain": "training"},
    )
    def training_dataset(
        context: dg.AssetExecutionContext,
        config: RetrainRequest,
        monitoring_store: MonitoringStoreResource,
        artifact_store: ArtifactStoreResource,
        data_source: DataSourceResource,
    ) -> dg.MaterializeResult:
        store, artifacts = monitoring_store.get(), artifact_store.get()
        open_run_event(context.instance, store, model, context.run, config.reason, config.requester)
        if config.data_version != "latest":
            original, version, frame = reuse_dataset(store, artifacts, model, config.data_version, context.run.run_id,
                                                     config.reason)
            context.log.info(f"dataset {version.tag}: {original.tag} again ({len(frame)} rows, hash verified)")
            return dg.MaterializeResult(
                metadata={
                    "dataset_version": version.tag,
                    "reproduces": original.tag,
                    "content_hash": original.content_hash,
                    ROW_COUNT: len(frame),
                    COLUMN_SCHEMA: dg.MetadataValue.table_schema(table_schema(frame, column_roles(model))),
                    "split_rows": {name: int((frame[SPLIT_COLUMN] == name).sum()) for name in ("train", "validation", "test")},
                    "source_query": dg.MetadataValue.text(version.source_query or ""),
                    URI: artifacts.uri_of(original.artifact_key),
                },
                data_version=dg.DataVersion(original.content_hash),
            )
        source = data_source.for_model(model)
        raw = source.labeled_rows()
        if raw.empty:
            raise DataError(
                f"no labeled rows for model {model.name} in its data source ({source.describe()}): log predictions "
                "and their labels first (see docs/data-sources.md), or fix the model's data_source in retrain.yaml"
            )
        cleaned = clean_labeled_rows(raw, model)
        window, weights = select_window(cleaned, model.dataset)
        window = window.assign(**{WEIGHT_COLUMN: 1.0 if weights is None else np.asarray(weights, dtype=float)})
        split = split_dataset(window, model, model.dataset, seed=model.training.seed)
        columns = [*model.feature_names, model.target, "timestamp", "request_id"]
        frame = pd.concat(
            [
                part[[*columns, WEIGHT_COLUMN]].assign(**{SPLIT_COLUMN: name})
                for name, part in (("train", split.train), ("validation", split.validation), ("test", split.test))
            ],
            ignore_index=True,
        )
        digest = content_hash(frame[columns])
        stored = artifacts.put_frame(frame)
        profile = ReferenceProfile.from_frame(
            split.train, numeric=model.numeric_features, categorical=model.categorical_features, settings=model.drift
        )
        profile_ref = artifacts.put_text(profile.to_json(), ".profile.json")
        summary = dataset_summary(window, model)
        trigger, reason = run_trigger(context.run.tags)
        source_query = f"{source.describe()}; strategy={model.dataset.strategy}"
        if "safe_to_send" in raw.columns:
            source_query += "; rows flagged safe_to_send = false dropped"
        version = store.registry.record_dataset(
            model.name,
            content_hash=digest,
            artifact_key=stored.key,
            artifact_sha256=stored.sha256,
            profile_key=profile_ref.key,
            profile_sha256=profile_ref.sha256,
            rows=len(frame),
            max_label_id=int(raw["label_id"].max()),
            summary=summary,
            source_query=source_query,
            run_id=context.run.run_id,
        )
        context.log.info(f"dataset {version.tag} ({len(frame)} rows, hash {digest[:12]}) for {trigger}: {reason or config.reason}")
        return dg.MaterializeResult(
            metadata={
                "dataset_version": version.tag,
                "content_hash": digest,
                ROW_COUNT: len(frame),
                COLUMN_SCHEMA: dg.MetadataValue.table_schema(table_schema(frame, column_roles(model))),
                "rows_removed_by_quality_filter": len(raw) - len(cleaned),
                "split_rows": {"train": len(split.train), "validation": len(split.validation), "test": len(split.test)},
                "summary": summary,
                "source_query": dg.MetadataValue.text(source_query),
                URI: artifacts.uri_of(stored.key),
            },
            data_version=dg.DataVersion(digest),
        )

    return training_dataset


def build_data_quality(model: ModelSettings) -> dg.AssetChecksDefinition:
    """The blocking data-quality checks on the model's training_dataset."""
    dataset_key = asset_key(model.name, "training_dataset")

    @dg.multi_asset_check(
        name=f"{model.name}_data_quality",
        specs=[
            dg.AssetCheckSpec(name, asset=dataset_key, blocking=True, description=f"Great Expectations: {requirement}")
            for name, requirement in quality_requirements(model, generic=True).items()
        ],
        description="Great Expectations validation of the new dataset; training never runs on bad data.",
    )
    def data_quality(
        context: dg.AssetCheckExecutionContext,
        monitoring_store: MonitoringStoreResource,
        artifact_store: ArtifactStoreResource,
    ):
        store, artifacts = monitoring_store.get(), artifact_store.get()
        dataset, frame = load_dataset(store, artifacts, model, context.run.run_id)
        results = validate_training_data(
            frame.drop(columns=[SPLIT_COLUMN, WEIGHT_COLUMN]), model, reference=reference_of_production(store, artifacts, model)
        )
        store.registry.record_quality(
            model.name, dataset.tag,
            [{"name": r.name, "passed": bool(r.passed), "status": r.status, "message": r.message, "warnings": r.warnings}
             for r in results],
        )
        status = quality_status(results)
        if status != "healthy":
            context.log.warning(f"{model.name} dataset {dataset.tag}: data quality {status}: "
                                + "; ".join(r.message for r in results if r.status != "healthy"))
        failed = [r.name for r in results if not r.passed]
        event_id = event_of_run(store, context.run)
        if failed and event_id:
            fail_retrain(
                store, model, int(event_id),
                execution_metrics={"failed_quality_checks": failed, "dataset_version": dataset.tag,
                                   "run_id": context.run.run_id},
            )
        by_name = {r.name: r for r in results}
        for name in QUALITY_CHECKS:
            result = by_name[name]
            yield dg.AssetCheckResult(
                asset_key=dataset_key,
                check_name=name,
                passed=bool(result.passed),
                severity=dg.AssetCheckSeverity.ERROR,
                description=result.message,
                metadata={
                    "dataset_version": dataset.tag,
                    "status": result.status,
                    "dataset_quality_status": status,
                    "observed": dg.MetadataValue.text(str(result.observed)),
                    "expected": dg.MetadataValue.text(str(result.expected)),
                },
            )

    return data_quality
