"""The product's retraining policy, as the monitoring job and the trigger sensors apply it.

Three automatic triggers decide independently, each through :func:`should_retrain` or a count:

* **drift**: recent served feature rows against the profile of the production model's training data;
* **performance**: the production model's labeled predictions against its baseline, plus concept drift;
* **data volume**: labels that arrived since the production model's dataset (>= ``new_labels_now`` HIGH,
  >= ``new_labels_scheduled`` MEDIUM).

A triggered signal then passes the guards and timing of :mod:`retrain_assets.monitoring.guards`. The
Dagster assets and sensors call these functions, and so does the replay harness: a replay of ``ours`` is
the product's policy, not a re-implementation of it.

``model`` is a :class:`retrain_assets.settings.ModelSettings` (not imported: settings import this package).
"""

from retrain_assets.monitoring.retrain_decision import RetrainDecision, should_retrain

TRIGGERS = ("drift", "performance", "data_volume")


def drift_decision(reference, recent, model) -> RetrainDecision:
    """``reference``: a ReferenceProfile (or rows) of the training data; ``recent``: served feature rows."""
    return should_retrain(
        reference, recent[model.feature_names], task=model.task, drift=model.drift, performance=model.performance,
        numeric=model.numeric_features, categorical=model.categorical_features,
    )


def performance_decision(predictions, actuals, baseline: dict, model, scores=None) -> RetrainDecision:
    """``predictions``/``actuals``: the production model's labeled predictions, oldest first."""
    return should_retrain(
        None, None, predictions, actuals, baseline, task=model.task, drift=model.drift,
        performance=model.performance, scores=scores, positive_label=model.positive_label,
    )


def severity_name(decision: RetrainDecision) -> str:
    return decision.severity.value if decision.signals else "NONE"


def volume_severity(new_labels: int, triggers) -> str | None:
    """HIGH at ``new_labels_now`` new labels, MEDIUM at ``new_labels_scheduled``, else None (wait).
    ``triggers``: TriggerSettings."""
    if new_labels >= triggers.new_labels_now:
        return "HIGH"
    return "MEDIUM" if new_labels >= triggers.new_labels_scheduled else None
