"""Per-model training assets: training_dataset -> candidate_model -> production_model.

The assets are thin: they fetch inputs through resources, call the pure core in
:mod:`retrain_assets.training`, persist results in the registry/artifact store, and report what a person
needs in the UI as metadata. Quality checks on the dataset and evaluation gates on the candidate are
*blocking* asset checks, so a failing one stops the run before anything downstream (training, promotion)
executes: production stays on the last good model.
"""

import time

import dagster as dg
import numpy as np
import pandas as pd

from retrain_assets.defs.deployment.promotion import promote_candidate
from retrain_assets.defs.keys import TAG_CANDIDATE_RUN, asset_key, promote_job_name, retrain_job_name, run_trigger
from retrain_assets.defs.triggers.requests import event_of_run, open_run_event
from retrain_assets.defs.metadata import COLUMN_SCHEMA, ROW_COUNT, URI, markdown_image, md_table, metric_metadata, table_schema
from retrain_assets.defs.resources import ArtifactStoreResource, DataSourceResource, MonitoringStoreResource
from retrain_assets.errors import DataError, StoreError
from retrain_assets.monitoring import ReferencePack, ReferenceProfile, build_reference_pack
from retrain_assets.settings import ModelSettings
from retrain_assets.training import (
    QUALITY_CHECKS,
    DatasetSplit,
    clean_labeled_rows,
    content_hash,
    dataset_summary,
    evaluate_gates,
    gate_requirements,
    quality_requirements,
    reference_for,
    select_window,
    split_dataset,
    train_candidate,
    validate_training_data,
)
from retrain_assets.training.train import cv_metric

SPLIT_COLUMN = "__split"
WEIGHT_COLUMN = "__weight"


class RetrainRequest(dg.Config):
    """Why this retrain was asked for; filled in the launchpad for a manual retrain."""

    reason: str = ""
    requester: str = ""


def column_roles(model: ModelSettings) -> dict[str, str]:
    """What each stored column is, for the dataset's column schema in the catalog."""
    roles = {name: "numeric feature" for name in model.numeric_features}
    roles |= {name: "categorical feature" for name in model.categorical_features}
    return roles | {model.target: "label (target)", "timestamp": "when the prediction was made",
                    "request_id": "the prediction's request id", WEIGHT_COLUMN: "training weight (recency)",
                    SPLIT_COLUMN: "train / validation / test"}


def split_frame(frame: pd.DataFrame) -> tuple[DatasetSplit, np.ndarray | None]:
    """The stored dataset back into its split, plus training weights (None when all rows weigh the same)."""
    parts = {
        name: frame[frame[SPLIT_COLUMN] == name].drop(columns=[SPLIT_COLUMN, WEIGHT_COLUMN])
        for name in ("train", "validation", "test")
    }
    weights = frame.loc[frame[SPLIT_COLUMN] != "test", WEIGHT_COLUMN].to_numpy()
    split = DatasetSplit(train=parts["train"], validation=parts["validation"], test=parts["test"])
    return split, None if np.allclose(weights, 1.0) else weights


def load_dataset(store, artifacts, model: ModelSettings, run_id: str | None):
    dataset = store.registry.latest_dataset(model.name, run_id=run_id)
    if dataset is None:
        raise StoreError(f"model {model.name} has no training dataset yet: materialize {model.name}/training_dataset first")
    return dataset, artifacts.load_frame(dataset.artifact_key, dataset.artifact_sha256)


def reference_of_production(store, artifacts, model: ModelSettings) -> dict | None:
    """Ranges, categories and classes of the production model's training data, for the quality checks."""
    production = store.registry.production(model.name)
    if production is None:
        return None
    dataset = store.registry.dataset(model.name, production.dataset_tag)
    frame = artifacts.load_frame(dataset.artifact_key, dataset.artifact_sha256)
    return reference_for(frame[frame[SPLIT_COLUMN] == "train"], model)


def own_candidate(store, model: ModelSettings, run: dg.DagsterRun):
    """The candidate this run is about: the one it trained or, for a re-execution from failure, the one the
    run it re-executes trained; for a promotion run, the one its retrain run trained. Never the newest
    candidate of some other run: that one may be stale or ungated."""
    tags = run.tags
    for run_id in dict.fromkeys([tags.get(TAG_CANDIDATE_RUN), run.run_id, tags.get("dagster/parent_run_id"),
                                 tags.get("dagster/root_run_id")]):
        if run_id:
            candidate = store.registry.candidate_of_run(model.name, run_id)
            if candidate is not None:
                return candidate
    return None


def candidate_pictures(trained, test: pd.DataFrame, model: ModelSettings, metric: str) -> dict:
    """The tuning history and the evaluation plot, as pictures in the candidate's metadata."""
    from retrain_assets.training.plots import evaluation_picture, tuning_picture  # matplotlib: in the run only

    pictures = {"tuning_history": (tuning_picture(trained.trials, metric), f"CV {metric} by tuning trial"),
                "evaluation": (evaluation_picture(trained.pipeline, test, model), "evaluation on the test rows")}
    return {name: markdown_image(png, alt) for name, (png, alt) in pictures.items() if png}


def reference_metadata(pack: ReferencePack) -> dict:
    """The reference pack as a person reads it on the candidate: the yardsticks its decisions will use."""
    loss = "held_out_mae" if pack.task == "regression" else "held_out_error_rate"
    out = {
        loss: round(pack.loss.mean, 6),
        "held_out_rows": pack.loss.rows,
        "error_dependence": round(pack.loss.dependence, 3),
        "feature_importance": dg.MetadataValue.md(md_table(
            {f: round(w, 4) for f, w in sorted(pack.importances.items(), key=lambda item: -item[1])}, {})),
    }
    if pack.drift is not None:
        out["drift_threshold"] = round(pack.drift.threshold, 6)
    if pack.cbpe is not None:
        out["cbpe_expected_accuracy"] = round(pack.cbpe.expected_accuracy, 6)
    return out


def build_training_assets(model: ModelSettings) -> list:
    dataset_key = asset_key(model.name, "training_dataset")
    candidate_key = asset_key(model.name, "candidate_model")
    production_key = asset_key(model.name, "production_model")
    owners = list(model.owners)

    @dg.asset(
        key=dataset_key,
        group_name=model.name,
        description=(
            f"Labeled rows of model `{model.name}` from its data source (`{model.data_source.kind}`; quality-filtered, de-duplicated, "
            f"strategy `{model.dataset.strategy}`), split train/validation/test and versioned by content hash."
        ),
        kinds={"pandas", "parquet", "greatexpectations"},
        owners=owners,
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
            [{"name": r.name, "passed": bool(r.passed), "message": r.message} for r in results],
        )
        failed = [r.name for r in results if not r.passed]
        event_id = event_of_run(store, context.run)
        if failed and event_id:
            store.events.complete(
                int(event_id),
                successful=False,
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
                    "observed": dg.MetadataValue.text(str(result.observed)),
                    "expected": dg.MetadataValue.text(str(result.expected)),
                },
            )

    @dg.asset(
        key=candidate_key,
        group_name=model.name,
        deps=[dataset_key],
        description=(
            f"A {model.estimator.type} pipeline for `{model.name}` trained (and tuned with "
            f"{model.training.tuning_trials} Optuna trials) on the newest training_dataset; evaluation gates "
            "decide whether it may replace production."
        ),
        kinds={"scikitlearn", "optuna"} if model.training.tuning_trials else {"scikitlearn"},
        owners=owners,
        tags={"domain": "training"},
    )
    def candidate_model(
        context: dg.AssetExecutionContext,
        monitoring_store: MonitoringStoreResource,
        artifact_store: ArtifactStoreResource,
    ) -> dg.MaterializeResult:
        store, artifacts = monitoring_store.get(), artifact_store.get()
        dataset, frame = load_dataset(store, artifacts, model, context.run.run_id)
        split, weights = split_frame(frame)
        started = time.perf_counter()
        metric = cv_metric(model)[0]

        def log_trial(trial: dict) -> None:
            context.log.info(
                f"tuning trial {trial['number'] + 1}/{trial['of']}: CV {metric} {trial['value']:.4f} "
                f"(best {trial['best_value']:.4f}) in {trial['seconds'] or 0:.1f} s, params {trial['params']}")

        trained = train_candidate(split, model, model.training, sample_weight=weights, on_trial=log_trial)
        ref = artifacts.put_model(trained.pipeline)
        # Everything later decisions need about this model, computed once: held-out losses, importances,
        # the drift threshold calibrated on its window, the CBPE reference.
        profile = ReferenceProfile.from_json(artifacts.load_text(dataset.profile_key, dataset.profile_sha256))
        window = frame.drop(columns=[SPLIT_COLUMN, WEIGHT_COLUMN]).sort_values("timestamp", kind="stable")
        pack = build_reference_pack(trained.pipeline, model, window, split.test, profile, model.decision,
                                    seed=model.training.seed)
        pack_ref = artifacts.put_text(pack.to_json(), ".reference.json")
        trigger, reason = run_trigger(context.run.tags)
        version = store.registry.register_candidate(
            model.name,
            artifact_key=ref.key,
            artifact_sha256=ref.sha256,
            size_bytes=ref.size_bytes,
            dataset_tag=dataset.tag,
            dataset_hash=dataset.content_hash,
            params=trained.params,
            metrics=trained.metrics,
            trigger=trigger,
            reason=reason,
            run_id=context.run.run_id,
            reference_key=pack_ref.key,
            reference_sha256=pack_ref.sha256,
        )
        return dg.MaterializeResult(
            metadata={
                "model_version": version.label,
                **reference_metadata(pack),
                "dataset_version": dataset.tag,
                "dataset_hash": dataset.content_hash,
                **metric_metadata(trained.metrics, prefix="test_"),
                "cv_scores": [round(float(s), 4) for s in trained.cv_scores],
                "cv_mean": float(trained.cv_mean) if trained.cv_mean is not None else None,
                "params": dg.MetadataValue.json(trained.params),
                "tuning_trials": trained.tuning_trials,
                **candidate_pictures(trained, split.test, model, metric),
                "training_seconds": round(time.perf_counter() - started, 2),
                URI: artifacts.uri_of(ref.key),
                "artifact_sha256": ref.sha256,
                "artifact_size_bytes": ref.size_bytes,
                "trigger": trigger,
                "reason": dg.MetadataValue.text(reason),
            },
            data_version=dg.DataVersion(ref.sha256),
        )

    @dg.multi_asset_check(
        name=f"{model.name}_evaluation_gates",
        specs=[
            dg.AssetCheckSpec(name, asset=candidate_key, blocking=True, description=f"Evaluation gate: {requirement}")
            for name, requirement in gate_requirements(model).items()
            if name in model.gates.enabled
        ],
        description="Evaluation gates against the production model; a failed gate blocks promotion.",
    )
    def evaluation_gates(
        context: dg.AssetCheckExecutionContext,
        monitoring_store: MonitoringStoreResource,
        artifact_store: ArtifactStoreResource,
    ):
        store, artifacts = monitoring_store.get(), artifact_store.get()
        candidate = own_candidate(store, model, context.run)
        if candidate is None:
            raise StoreError(
                f"this run trained no candidate of model {model.name} to evaluate: the gates judge only the candidate "
                f"their own run trained; launch the {model.name}_retrain job"
            )
        candidate_pipeline = artifacts.load_model(candidate.artifact_key, candidate.artifact_sha256)
        production = store.registry.production(model.name)
        production_pipeline = None
        if production is not None:
            production_pipeline = artifacts.load_model(production.artifact_key, production.artifact_sha256)
        dataset = store.registry.dataset(model.name, candidate.dataset_tag)
        frame = artifacts.load_frame(dataset.artifact_key, dataset.artifact_sha256)
        test = split_frame(frame)[0].test
        results = evaluate_gates(
            candidate_pipeline,
            production_pipeline,
            test,
            model,
            model.gates,
            candidate_size_bytes=candidate.size_bytes,
            production_size_bytes=None if production is None else production.size_bytes,
            seed=model.training.seed,
        )
        passed = all(r.passed for r in results)
        store.registry.record_gates(model.name, candidate.version, [r.to_dict() for r in results], passed)
        event_id = event_of_run(store, context.run)
        if not passed and event_id:
            failed = [r.name for r in results if not r.passed]
            store.events.complete(
                int(event_id),
                successful=False,
                retraining_model_version=candidate.label,
                gate_summary={r.name: r.passed for r in results},
                execution_metrics={"failed_gates": failed, "run_id": context.run.run_id},
            )
        against = f"production {production.label}" if production else "no production model yet (absolute gates and smoke test only)"
        for result in results:
            yield dg.AssetCheckResult(
                asset_key=candidate_key,
                check_name=result.name,
                passed=bool(result.passed),
                severity=dg.AssetCheckSeverity.ERROR,
                description=result.message,
                metadata={
                    "candidate": candidate.label,
                    "compared_with": against,
                    "applicable": bool(result.applicable),
                    "values_vs_thresholds": dg.MetadataValue.md(md_table(result.value, result.threshold)),
                    **{f"value_{k}": v for k, v in (result.value or {}).items() if isinstance(v, (int, float))},
                },
            )

    @dg.asset(
        key=production_key,
        group_name=model.name,
        deps=[candidate_key],
        description=(
            f"The model serving `{model.name}`. Materializes only when a candidate passed every gate and was "
            "promoted (blue/green: the previous one stays as standby for instant rollback), so its history "
            "is the promotion log."
            + (" Shadow evaluation is on: a gated candidate first scores live traffic beside production and "
               f"the {model.name}_shadow_decision job promotes it if it does no worse." if model.deployment.shadow else "")
        ),
        kinds={"scikitlearn"},
        owners=owners,
        tags={"domain": "deployment"},
        output_required=False,  # nothing materializes while the candidate is in shadow
    )
    def production_model(context: dg.AssetExecutionContext, monitoring_store: MonitoringStoreResource):
        store = monitoring_store.get()
        candidate = own_candidate(store, model, context.run)
        gated = candidate is not None and candidate.gate_results is not None and all(
            g.get("passed") for g in candidate.gate_results)
        if candidate is None or candidate.status != "candidate" or not gated:
            raise StoreError(
                f"this run has no gated candidate of model {model.name} to promote: production_model promotes only the "
                f"candidate of the retrain run named by its {TAG_CANDIDATE_RUN} tag, once that candidate passed every "
                f"gate, never an older one; launch {retrain_job_name(model.name)} (its promotion sensor launches "
                f"{promote_job_name(model.name)} when the gates pass)"
            )
        if model.deployment.shadow and store.registry.production(model.name) is not None:
            replaced = store.registry.start_shadow(model.name, candidate.version)
            context.log.info(
                f"{model.name} {candidate.label} passed its gates and now scores live traffic in shadow"
                f"{f' (replacing {replaced.label})' if replaced else ''}; the {model.name}_shadow_sensor launches "
                f"the decision after {model.deployment.shadow_min_samples} labeled shadowed requests"
            )
            return
        trigger, reason = run_trigger(context.run.tags)
        previous, metadata = promote_candidate(store, model, candidate, context.run.run_id,
                                               event_of_run(store, context.run), trigger, reason)
        context.log.info(f"promoted {model.name} {candidate.label} (previous: {previous.label if previous else 'none'})")
        yield dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(candidate.artifact_sha256))

    return [training_dataset, data_quality, candidate_model, evaluation_gates, production_model]
