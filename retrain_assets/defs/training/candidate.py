"""The candidate step of a retrain: ``candidate_model`` (tuned, trained and described with everything later
decisions need) and its blocking evaluation gates against production. A failed gate stops the run here:
the promotion run is never requested and production stays as it was."""

import time

import dagster as dg
import pandas as pd

from retrain_assets.defs.keys import TAG_CANDIDATE_RUN, asset_key, run_trigger
from retrain_assets.defs.metadata import URI, markdown_image, md_table, metric_metadata
from retrain_assets.defs.resources import ArtifactStoreResource, MonitoringStoreResource
from retrain_assets.defs.training.stored import SPLIT_COLUMN, WEIGHT_COLUMN, load_dataset, split_frame
from retrain_assets.defs.triggers.requests import event_of_run, fail_retrain
from retrain_assets.errors import StoreError
from retrain_assets.monitoring import ReferencePack, ReferenceProfile, build_reference_pack
from retrain_assets.settings import ModelSettings
from retrain_assets.training import evaluate_gates, gate_requirements, train_candidate
from retrain_assets.training.train import TrainingBudgetExceeded, cv_metric


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


def budget_failure(store, model: ModelSettings, run: dg.DagsterRun, error: TrainingBudgetExceeded) -> dg.Failure:
    """A spent training budget as the step's failure, its numbers as the failure's metadata, and as the
    outcome of the run's retraining event, so the event says why (not only "the run failed")."""
    numbers = {"training_budget_s": error.budget_s, "training_seconds": round(error.elapsed_s, 3),
               "tuning_trials_done": error.trials, "stage": error.stage}
    event_id = event_of_run(store, run)
    if event_id:
        fail_retrain(store, model, int(event_id), execution_metrics={"run_id": run.run_id, "error": str(error), **numbers})
    return dg.Failure(description=str(error), metadata=numbers, allow_retries=False)


def build_candidate_model(model: ModelSettings) -> dg.AssetsDefinition:
    """The model's candidate_model asset."""
    dataset_key = asset_key(model.name, "training_dataset")
    candidate_key = asset_key(model.name, "candidate_model")

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
        owners=list(model.owners),
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

        try:
            trained = train_candidate(split, model, model.training, sample_weight=weights, on_trial=log_trial)
        except TrainingBudgetExceeded as error:
            raise budget_failure(store, model, context.run, error) from error
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
                "cv_metric": metric,
                "tuning_trials": trained.tuning_trials,
                "trials": dg.MetadataValue.json(trained.trials),
                **candidate_pictures(trained, split.test, model, metric),
                "training_seconds": round(trained.train_seconds, 2),
                "training_budget_s": model.training.training_budget_s,
                "step_seconds": round(time.perf_counter() - started, 2),
                URI: artifacts.uri_of(ref.key),
                "artifact_sha256": ref.sha256,
                "artifact_size_bytes": ref.size_bytes,
                "trigger": trigger,
                "reason": dg.MetadataValue.text(reason),
            },
            data_version=dg.DataVersion(ref.sha256),
        )

    return candidate_model


def build_evaluation_gates(model: ModelSettings) -> dg.AssetChecksDefinition:
    """The blocking evaluation gates on the model's candidate_model."""
    candidate_key = asset_key(model.name, "candidate_model")

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
        # Each result names the production version it was judged against: the promotion refuses to ship the
        # candidate if production changed since (it was never compared with the new one).
        compared = production.version if production is not None else None
        store.registry.record_gates(model.name, candidate.version,
                                    [{**r.to_dict(), "production_version": compared} for r in results], passed)
        event_id = event_of_run(store, context.run)
        if not passed and event_id:
            failed = [r.name for r in results if not r.passed]
            fail_retrain(
                store, model, int(event_id),
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

    return evaluation_gates
