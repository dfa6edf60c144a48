"""The candidate's experiment record (seed 002: "model metadata: hyperparameters, data version, training
time"; "log experiment"): what the candidate_model materialization carries, checked value by value against
the registry and the dataset, and a spent training budget failing the run with its reason in the event."""

import dagster as dg
import numpy as np
import pytest

from tests.conftest import make_settings


def test_the_candidate_materialization_records_the_experiment(tmp_path, harness_for):
    h = harness_for(make_settings(tmp_path, training={"tuning_trials": 3, "cv_folds": 3}))
    h.traffic(1500)
    result = h.retrain(reason="experiment record")
    assert result.success
    materialization = h.instance.get_latest_materialization_event(
        dg.AssetKey(["churn", "candidate_model"])).asset_materialization
    meta = materialization.metadata
    candidate = h.store.registry.version("churn", 1)
    dataset = h.store.registry.latest_dataset("churn")

    # params: the tuned parameters the registry stored and the artifact was fitted with
    assert meta["params"].value == candidate.params
    assert meta["params"].value["learning_rate"] == pytest.approx(
        h.artifacts.load_model(candidate.artifact_key, candidate.artifact_sha256).named_steps["estimator"].learning_rate)
    # data version: the dataset's tag and content hash; the materialization's own version is the artifact's hash
    assert (meta["dataset_version"].value, meta["dataset_hash"].value) == (dataset.tag, dataset.content_hash)
    assert candidate.dataset_tag == dataset.tag and candidate.dataset_hash == dataset.content_hash
    assert materialization.tags["dagster/data_version"] == candidate.artifact_sha256
    # duration: tuning plus final fit, inside the whole step and the budget it is held to
    assert 0 < meta["training_seconds"].value <= meta["step_seconds"].value
    assert meta["training_budget_s"].value == 3600.0
    # CV scores: one per fold of the best trial, their mean, the metric's name
    scores = meta["cv_scores"].value
    assert len(scores) == 3 and all(0 < s <= 1 for s in scores) and meta["cv_metric"].value == "f1"
    assert meta["cv_mean"].value == pytest.approx(np.mean(scores), abs=1e-3)
    # trials: every trial in order, the configured parameters first, the best one's parameters chosen
    trials = meta["trials"].value
    assert meta["tuning_trials"].value == 3 and [t["number"] for t in trials] == [0, 1, 2]
    assert trials[0]["params"]["learning_rate"] == 0.1
    assert all(set(t) == {"number", "value", "params", "seconds"} for t in trials)
    best = max(trials, key=lambda t: t["value"])
    assert best["value"] == pytest.approx(meta["cv_mean"].value, abs=1e-3)
    assert {k: meta["params"].value[k] for k in best["params"]} == pytest.approx(best["params"])


def test_a_spent_training_budget_fails_the_run_and_its_event_says_why(tmp_path, harness_for):
    """A nanosecond budget is spent whatever the machine: the candidate step fails with the budget's message
    and numbers, nothing is registered, and the retraining event records the failure with that message."""
    h = harness_for(make_settings(tmp_path, training={"tuning_trials": 2, "cv_folds": 3, "training_budget_s": 1e-9}))
    h.traffic(1500)
    result = h.retrain(event=True)
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert [e.step_key for e in failures] == ["churn__candidate_model"]
    failure = failures[0].step_failure_data.user_failure_data
    assert "training.training_budget_s = 1e-09 s" in failure.description
    assert "fewer trials" in failure.description and "raise training.training_budget_s" in failure.description
    assert failure.metadata["training_budget_s"].value == 1e-9
    assert failure.metadata["tuning_trials_done"].value <= 1  # Optuna stopped starting trials: not the 2 asked for
    assert h.store.registry.candidate_of_run("churn", result.run_id) is None  # nothing trained over budget is kept
    event = h.store.events.recent("churn")[0]
    assert event["execution_successful"] is False and event["execution_completed_at"] is not None
    assert event["execution_metrics"]["run_id"] == result.run_id
    assert "training_budget_s" in event["execution_metrics"]["error"]
    assert event["execution_metrics"]["training_budget_s"] == 1e-9
