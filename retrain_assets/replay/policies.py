"""When to retrain, as a replay asks it before each batch: never, always, every K batches, or ours.

``ours`` is the product's policy itself (:mod:`retrain_assets.monitoring.policy` plus the guards and timing
of :mod:`retrain_assets.monitoring.guards`), fed only with what was known at that moment: the features of
the batches served so far, the labels that have arrived, and the production model's own record.
"""

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from retrain_assets.errors import DataError
from retrain_assets.monitoring.guards import TriggerFacts, blocking_guards, in_quiet_window, timing
from retrain_assets.monitoring.policy import drift_decision, performance_decision, severity_name, volume_severity


@dataclass(frozen=True)
class Knowledge:
    """What a policy may look at before batch ``batch`` (built by the harness, nothing from later)."""

    batch: int
    now: dt.datetime
    next_batch_in: dt.timedelta
    served_features: pd.DataFrame  # the newest served rows (all versions), oldest first
    production_outcomes: pd.DataFrame  # the production version's labeled predictions: prediction, score, label
    production_metrics: dict
    production_reference: object  # ReferenceProfile of its training rows
    labeled_rows: int  # labels known now
    new_labels: int  # labels known now that its dataset did not have
    last_attempt: dt.datetime | None
    failed_quality: list[str]  # of the last retrain attempt, if no label arrived since


@dataclass(frozen=True)
class Verdict:
    retrain: bool
    trigger: str = ""
    severity: str = ""
    reason: str = ""


class Policy:
    name: str

    def decide(self, knowledge: Knowledge, model) -> Verdict:
        raise NotImplementedError


class Never(Policy):
    name = "never"

    def decide(self, knowledge, model):
        return Verdict(False)


class Always(Policy):
    name = "always"

    def decide(self, knowledge, model):
        return Verdict(True, "always", "", "every batch")


class Periodic(Policy):
    def __init__(self, every: int):
        self.every = every
        self.name = f"periodic:{every}"

    def decide(self, knowledge, model):
        due = knowledge.batch % self.every == 0
        return Verdict(due, "schedule", "", f"every {self.every} batches") if due else Verdict(False)


class Ours(Policy):
    """The three automatic triggers, each through the guards and timing, in the sensors' order."""

    name = "ours"

    def decide(self, knowledge: Knowledge, model) -> Verdict:
        for trigger, severity, reason in self._signals(knowledge, model):
            facts = TriggerFacts(severity=severity, labeled_rows=knowledge.labeled_rows, now=knowledge.now,
                                 last_attempt=knowledge.last_attempt, failed_quality=knowledge.failed_quality)
            if blocking_guards(facts, model.triggers):
                continue
            when = timing(severity, knowledge.now, model.triggers)
            if when == "wait" and not _quiet_window_before(knowledge.now, knowledge.next_batch_in, model.triggers):
                continue  # the sensor would still be waiting when the next batch starts
            if when != "monitor":
                return Verdict(True, trigger, severity, reason)
        return Verdict(False)

    @staticmethod
    def _signals(knowledge: Knowledge, model):
        drift = drift_decision(knowledge.production_reference, knowledge.served_features, model)
        if drift.triggered:
            yield "drift", severity_name(drift), "; ".join(drift.reasons)
        outcomes = knowledge.production_outcomes
        if len(outcomes):
            scores = outcomes["score"].to_numpy(dtype=float) if model.task == "classification" else None
            if scores is not None and np.isnan(scores).any():
                scores = None
            performance = performance_decision(outcomes["prediction"].to_numpy(), outcomes["label"].to_numpy(),
                                               knowledge.production_metrics, model, scores)
            if performance.triggered:
                yield "performance", severity_name(performance), "; ".join(performance.reasons)
        volume = volume_severity(knowledge.new_labels, model.triggers)
        if volume:
            yield "data_volume", volume, f"{knowledge.new_labels:,} new labels"


def _quiet_window_before(now: dt.datetime, within: dt.timedelta, triggers) -> bool:
    """Does the quiet window open before ``now + within``? (hourly steps: windows are whole hours)"""
    hours = int(within / dt.timedelta(hours=1))
    return any(in_quiet_window(now + dt.timedelta(hours=h), triggers) for h in range(hours + 1))


def parse_policy(text: str) -> Policy:
    text = text.strip()
    if text == "never":
        return Never()
    if text == "always":
        return Always()
    if text == "ours":
        return Ours()
    if text.startswith("periodic:"):
        every = text.split(":", 1)[1]
        if every.isdigit() and int(every) >= 1:
            return Periodic(int(every))
    raise DataError(f"unknown --policy {text!r}: use never, always, periodic:K (K >= 1 batches) or ours")
