"""The replay: walk a table's batches in time order as production would have lived them.

Before each batch the policy decides from what was known then (:class:`Knowledge`); a retrain goes
through the product's own dataset, data-quality, training and gate functions; the candidate is promoted
only if every enabled gate passes. Then the production model predicts the batch and is scored on its
labels (for the report: the policy only sees those labels ``label_delay`` batches later).

Timeline with ``label_delay = d``: the labels of batch j arrive after batch j + d is served, so before
batch i the known labels are the first window's and those of batches up to i - 1 - d.

Every candidate also gets its reference pack (held-out losses, importances, drift calibration, CBPE), built
by the same function the candidate asset calls, so ``ours`` decides on the evidence the product would have.
"""

import datetime as dt
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import yaml

from retrain_assets.config.deployment import DeploymentSettings
from retrain_assets.errors import ConfigError, DataError, RetrainError
from retrain_assets.monitoring import ReferencePack, ReferenceProfile, build_reference_pack
from retrain_assets.replay.data import ReplayTable, batch_span
from retrain_assets.replay.policies import Knowledge, Policy
from retrain_assets.serving.predict import predict_frame
from retrain_assets.settings import ModelSettings, settings_from_dict
from retrain_assets.training import (
    clean_labeled_rows,
    compute_metrics,
    evaluate_gates,
    reference_for,
    select_window,
    split_dataset,
    train_candidate,
    validate_training_data,
)

# Absolute floors are one model's business requirement; on most real data they would block every
# candidate. A replay judges a candidate against production: relative, significance and smoke gates.
REPLAY_GATES = ("relative_to_production", "significance", "smoke_test")
NO_GATES = "none"  # --gates none: every candidate that trains is promoted (no data-quality checks, no gates)


def replay_model(table: ReplayTable, *, label_delay: int, tune: bool = False, positive_label: Any = None,
                 overrides_file: str | Path | None = None) -> ModelSettings:
    """The model settings a replay trains and judges with: the product's defaults, the replay's gate
    profile, a sliding window of ``--window``, a monitoring window of one batch, freshness judged against
    the label delay, and whatever ``overrides_file`` (the YAML shape of a model block in retrain.yaml) sets.
    ``overrides_file = "none"`` replays ungated (see :data:`NO_GATES`)."""
    labels = table.frame[table.target]
    if positive_label is None and table.task == "classification":
        classes = sorted(labels.unique().tolist(), key=str)
        positive_label = 1 if set(classes) <= {0, 1} else classes[-1]
    span_hours = batch_span(table) / dt.timedelta(hours=1)
    block: dict[str, Any] = {
        "name": "replay",
        "task": table.task,
        "target": table.target,
        "positive_label": positive_label if positive_label is not None else 1,
        "features": [{"name": n, "type": "numeric"} for n in table.numeric]
        + [{"name": n, "type": "categorical"} for n in table.categorical],
        # Time-based split: the test rows are the newest labels, which the production model never trained
        # on (a random split of a sliding window would test production on rows it learned, favouring it).
        "dataset": {"strategy": "sliding", "window_rows": table.window_rows, "window_days": table.window_days,
                    "max_age_hours": (label_delay + 2) * span_hours, "time_based_split": True},
        # Cross-validation only reports (or, with --tune, chooses parameters): two folds are enough then.
        "training": {"tuning_trials": 5, "cv_folds": 5} if tune else {"tuning_trials": 0, "cv_folds": 2},
        "gates": {"enabled": list(REPLAY_GATES)},
        # What one monitoring run sees: the newest batch (the drift threshold is calibrated on chunks this size).
        "monitoring": {"window_rows": table.batch_rows},
        # No post-deploy watch runs in a replay; its evidence floor only has to fit in that window.
        "deployment": {"watch_min_samples": max(10, min(DeploymentSettings().watch_min_samples, table.batch_rows))},
    }
    if overrides_file is not None and str(overrides_file) != NO_GATES:
        try:
            overrides = yaml.safe_load(Path(overrides_file).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"--gates {overrides_file}: cannot read it as YAML ({error})") from None
        if not isinstance(overrides, dict):
            raise ConfigError(f"--gates {overrides_file}: expected a mapping like a model block of retrain.yaml")
        for key, value in overrides.items():
            block[key] = {**block.get(key, {}), **value} if isinstance(value, dict) and isinstance(block.get(key), dict) else value
    settings = settings_from_dict({"storage": {}, "models": [block]}, source=str(overrides_file or "replay defaults"))
    return settings.models[0]


@dataclass
class Production:
    version: int
    pipeline: Any
    metrics: dict
    reference: ReferenceProfile
    quality_reference: dict
    labels_known: int  # labeled rows known when its dataset was built
    size_bytes: int | None
    pack: ReferencePack | None = None
    training_rows: int = 0
    promoted_at: dt.datetime | None = None


@dataclass
class Failure:
    """The last retrain that did not promote: why, and how many labels were known then."""

    why: list[str]
    labels_known: int


@dataclass
class PolicyResult:
    policy: str
    task: str
    batches: list[dict] = field(default_factory=list)
    retrains: int = 0
    promotions: int = 0
    rejected_candidates: list[dict] = field(default_factory=list)
    compute_s: float = 0.0
    final_pipeline: Any = field(default=None, repr=False)  # the production model at the end (not in JSON)

    def mean(self, metric: str) -> float | None:
        values = [b[metric] for b in self.batches if b.get(metric) is not None]
        return float(np.mean(values)) if values else None

    def to_dict(self) -> dict:
        summary = {"mean_accuracy": self.mean("accuracy"), "mean_f1": self.mean("f1")}
        if self.task == "regression":
            summary |= {"mean_mae": self.mean("mae"), "mean_r2": self.mean("r2")}
        return {"policy": self.policy, **summary, "retrains": self.retrains, "promotions": self.promotions,
                "rejected_candidates": self.rejected_candidates, "compute_s": round(self.compute_s, 3),
                "batches": self.batches}


class Replay:
    """One policy's walk over one table (state: the production model, what was served, what is known)."""

    def __init__(self, table: ReplayTable, model: ModelSettings, policy: Policy, label_delay: int,
                 gated: bool = True):
        if label_delay < 0:
            raise DataError("--label-delay must be 0 or more batches")
        self.table, self.policy, self.label_delay, self.gated = table, policy, label_delay, gated
        self.model = policy.model_for(model)
        self.result = PolicyResult(policy.name, model.task)
        self.labels_known_upto = -1  # batches whose labels have arrived
        self.decided_labels = 0  # labels known at the previous decision (what arrived since is the newest batch)
        self.last_attempt: dt.datetime | None = None
        self.failure: Failure | None = None  # the last retrain that did not promote
        self.quality_failure: tuple[dt.datetime, list[str]] | None = None  # the newest dataset, if it failed quality
        self.version = 0
        self.production: Production | None = None

    # What is known --------------------------------------------------------------------------------------
    def _labeled_positions(self) -> np.ndarray:
        arrived = max(self.labels_known_upto + 1, 0)  # a negative slice end would count from the end
        parts = [self.table.first_window] + [b.rows for b in self.table.batches[:arrived]]
        return np.concatenate(parts)

    def _knowledge(self, index: int) -> Knowledge:
        table, model, production = self.table, self.model, self.production
        served_rows = np.concatenate([b.rows for b in table.batches[:index]])[-model.monitoring.window_rows:]
        labeled = self._labeled_positions()
        # Evidence already acted on does not count twice: after a failed retrain, only newer labels.
        since = production.labels_known
        if self.failure is not None and self.failure.labels_known > since:
            since = self.failure.labels_known
        newest = max(len(labeled) - max(self.decided_labels, since), 0)
        self.decided_labels = len(labeled)
        last_failure = self.failure.why if self.failure is not None and self.failure.labels_known == len(labeled) else []
        next_start = table.batches[index + 1].start if index + 1 < len(table.batches) else table.batches[index].end
        now = table.batches[index].start.to_pydatetime()
        return Knowledge(
            batch=index, now=now,
            next_batch_in=(next_start - table.batches[index].start).to_pytimedelta(),
            recent_inputs=table.frame.iloc[served_rows][table.features],
            labeled_since=table.frame.iloc[labeled[since:]][[*table.features, table.target]],
            newest_batch=newest, production=production, labeled_rows=len(labeled),
            new_labels=len(labeled) - production.labels_known, labels_since_training=len(labeled) - since,
            training_rows=production.training_rows, last_attempt=self.last_attempt,
            last_failure=last_failure,
            critical_quality=self._critical_quality(now),
            # Age: since production was promoted or last challenged by a candidate that did not beat it.
            model_age_days=(now - max(production.promoted_at, self.last_attempt or production.promoted_at)) / dt.timedelta(days=1),
        )

    def _critical_quality(self, now: dt.datetime) -> str:
        """The guard's fact, as gather_facts builds it from the registry: the newest dataset failed data
        quality within quality_block_hours."""
        hours = self.model.triggers.quality_block_hours
        if self.quality_failure is None or not hours or now - self.quality_failure[0] >= dt.timedelta(hours=hours):
            return ""
        return f"dataset of {self.quality_failure[0]:%Y-%m-%d %H:%M}: {', '.join(self.quality_failure[1])} failed"

    # Retraining: the product's own functions ------------------------------------------------------------
    def _retrain(self, now: dt.datetime) -> dict:
        """Returns what happened: {"version", "promoted", "failed_gates" | "error"}."""
        table, model = self.table, self.model
        started = time.perf_counter()
        self.last_attempt = now
        self.version += 1
        outcome: dict[str, Any] = {"version": f"v{self.version}", "promoted": False}
        labeled = self._labeled_positions()
        try:
            rows = clean_labeled_rows(table.frame.iloc[labeled], model)
            window, weights = select_window(rows, model.dataset, now=now)
            if self.gated:
                quality = validate_training_data(window, model, self.production and self.production.quality_reference, now=now)
                failed = [q.name for q in quality if not q.passed]
                self.quality_failure = (now, failed) if failed else None  # the newest dataset's status, as the registry's
                if failed:
                    outcome["failed_gates"] = [f"data_quality:{name}" for name in failed]
                    return outcome
            split = split_dataset(window.assign(__w=1.0 if weights is None else weights), model, model.dataset,
                                  seed=model.training.seed)
            sample_weight = None if weights is None else split.train_and_validation["__w"].to_numpy()
            trained = train_candidate(split, model, model.training, sample_weight)
            enabled = model.gates.enabled
            size = len(pickle.dumps(trained.pipeline)) if "size" in enabled else None
            production = self.production
            if self.gated:
                gates = evaluate_gates(trained.pipeline, None if production is None else production.pipeline, split.test,
                                       model, model.gates, candidate_size_bytes=size,
                                       production_size_bytes=None if production is None else production.size_bytes,
                                       seed=model.training.seed)
                failed_gates = [g.name for g in gates if not g.passed]
                if failed_gates:
                    outcome["failed_gates"] = failed_gates
                    outcome["messages"] = [g.message for g in gates if not g.passed]
                    return outcome
            profile = ReferenceProfile.from_frame(split.train, numeric=model.numeric_features,
                                                  categorical=model.categorical_features, settings=model.drift)
            pack = build_reference_pack(trained.pipeline, model, window, split.test, profile, model.decision,
                                        seed=model.training.seed)
            self.production = Production(
                self.version, trained.pipeline, trained.metrics, profile, reference_for(split.train, model), len(labeled),
                size, pack, len(window), now,
            )
            outcome["promoted"] = True
            return outcome
        except RetrainError as error:  # e.g. a window with one class: the candidate is lost, production stays
            outcome["error"] = str(error)
            return outcome
        finally:
            if not outcome["promoted"]:
                self.failure = Failure(outcome.get("failed_gates") or [f"error: {outcome.get('error')}"], len(labeled))
            else:
                self.failure = None
            self.result.compute_s += time.perf_counter() - started

    def run(self, on_batch: Callable[[str, dict], None] | None = None) -> PolicyResult:
        """Walk the batches; ``on_batch(policy, row)`` hears about each one as it is done (progress)."""
        table, model, result = self.table, self.model, self.result
        first = self._retrain(table.batches[0].start.to_pydatetime())
        if not first["promoted"]:
            raise DataError(f"the first window could not produce a model: {first.get('error') or first.get('failed_gates')}"
                            f"{'; ' + '; '.join(first.get('messages', [])) if first.get('messages') else ''}")
        self.last_attempt = None  # the first model is the starting point, not a retrain
        self.result.compute_s = 0.0
        for batch in table.batches:
            self.labels_known_upto = batch.index - 1 - self.label_delay
            row: dict[str, Any] = {"batch": batch.index, "start": batch.start.isoformat(), "rows": len(batch.rows),
                                   "retrained": False, "promoted": False}
            if batch.index > 0:
                verdict = self.policy.decide(self._knowledge(batch.index), model)
                if verdict.retrain:
                    outcome = self._retrain(batch.start.to_pydatetime())
                    result.retrains += 1
                    row.update(retrained=True, promoted=outcome["promoted"], trigger=verdict.trigger,
                               severity=verdict.severity, reason=verdict.reason[:300], candidate=outcome["version"])
                    if outcome["promoted"]:
                        result.promotions += 1
                    else:
                        rejected = {"batch": batch.index, "version": outcome["version"],
                                    "failed_gates": outcome.get("failed_gates", []), "error": outcome.get("error")}
                        result.rejected_candidates.append(rejected)
                        row["failed_gates"] = rejected["failed_gates"] or [f"error: {outcome.get('error')}"]
            production = self.production
            features = table.frame.iloc[batch.rows][table.features]
            predictions, _ = predict_frame(production.pipeline, features, model)
            truth = table.frame[table.target].to_numpy()[batch.rows]
            metrics = compute_metrics(truth, np.asarray(predictions), model.task, model.positive_label)
            keep = ("accuracy", "f1") if model.task == "classification" else ("mae", "r2")
            row.update({"model_version": f"v{production.version}", **{k: metrics.get(k) for k in keep}})
            result.batches.append(row)
            if on_batch is not None:
                on_batch(self.policy.name, row)
        result.final_pipeline = self.production.pipeline
        return result


def run_replay(table: ReplayTable, model: ModelSettings, policies: list[Policy], label_delay: int = 1,
               gated: bool = True, on_batch: Callable[[str, dict], None] | None = None) -> list[PolicyResult]:
    return [Replay(table, model, policy, label_delay, gated).run(on_batch) for policy in policies]
