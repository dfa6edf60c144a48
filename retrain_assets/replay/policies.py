"""When to retrain, as a replay asks it before each batch: never, always, every K batches, ours, or seed.

``ours`` is the product's decision itself: the evidence the monitoring run would gather
(:func:`~retrain_assets.monitoring.evidence.gather_evidence`), the one pure
:func:`~retrain_assets.monitoring.decision.decide`, then the guards and timing of
:mod:`retrain_assets.monitoring.guards`, fed only with what was known at that moment. ``seed`` is the same
with ``decision.policy: seed`` and point gates: the design documents' rule set.
"""

import datetime as dt
import re
from dataclasses import dataclass

import pandas as pd

from retrain_assets.errors import DataError
from retrain_assets.monitoring.decision import decide
from retrain_assets.monitoring.evidence import gather_evidence
from retrain_assets.monitoring.guards import TriggerFacts, blocking_guards, in_quiet_window, timing


@dataclass(frozen=True)
class Knowledge:
    """What a policy may look at before batch ``batch`` (built by the harness, nothing from later)."""

    batch: int
    now: dt.datetime
    next_batch_in: dt.timedelta
    recent_inputs: pd.DataFrame  # the newest served rows (one monitoring window), oldest first
    labeled_since: pd.DataFrame  # rows labeled since production's dataset (or the last failed retrain), by arrival
    newest_batch: int  # how many of those arrived since the previous decision
    production: object  # the harness's Production: pipeline, profile, pack, metrics, training rows
    labeled_rows: int  # labels known now
    new_labels: int  # labels known now that its dataset did not have
    labels_since_training: int  # labels known now that the last training (production's, or a failed one) did not have
    training_rows: int  # rows of the last training's dataset
    last_attempt: dt.datetime | None
    last_failure: list[str]  # why the last retrain failed, if no label arrived since
    model_age_days: float
    critical_quality: str = ""  # the newest dataset failed data quality within quality_block_hours: which checks


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

    def model_for(self, model):
        """The model settings this policy runs with (its rules may differ from the defaults)."""
        return model


class Never(Policy):
    name = "never"

    def decide(self, knowledge, model):
        return Verdict(False)


class Always(Policy):
    name = "always"

    def decide(self, knowledge, model):
        return Verdict(True, "always", "", "every batch")


class Periodic(Policy):
    """Every ``every`` batches, the first at batch ``phase`` (default ``every``)."""

    def __init__(self, every: int, phase: int | None = None):
        self.every, self.phase = every, every if phase is None else phase
        self.name = f"periodic:{every}" if phase is None else f"periodic:{every}+{phase}"

    def decide(self, knowledge, model):
        due = knowledge.batch >= self.phase and (knowledge.batch - self.phase) % self.every == 0
        return Verdict(due, "schedule", "", f"every {self.every} batches from batch {self.phase}") if due else Verdict(False)


class Ours(Policy):
    """The product's decision, then its guards and timing, as the trigger sensor applies them."""

    name = "ours"

    def __init__(self):
        self.judged_version: int | None = None  # the production version the previous decision judged
        self.previous_warnings: tuple[str, ...] = ()
        self.verified_at: dt.datetime | None = None  # when a decision last judged production on fresh labels

    def decide(self, knowledge: Knowledge, model) -> Verdict:
        production = knowledge.production
        if production.version != self.judged_version:
            # As in the monitoring asset: the previous decision's warnings and verification were about
            # another model (its own reference and errors), so they say nothing about this one.
            self.previous_warnings, self.verified_at = (), None
        self.judged_version = production.version
        evidence = gather_evidence(
            model, pipeline=production.pipeline, profile=production.reference, pack=production.pack,
            recent=knowledge.recent_inputs, labeled=knowledge.labeled_since, newest_batch=knowledge.newest_batch,
            baseline=production.metrics, new_labels=knowledge.new_labels, training_rows=production.training_rows,
            model_age_days=knowledge.model_age_days, previous_warnings=self.previous_warnings,
            days_since_verified=None if self.verified_at is None else (knowledge.now - self.verified_at) / dt.timedelta(days=1),
        )
        decision = decide(evidence, model)
        self.previous_warnings = decision.warnings
        if decision.verified:
            self.verified_at = knowledge.now
        if not decision.retrain:
            return Verdict(False)
        facts = TriggerFacts(severity=decision.severity, labeled_rows=knowledge.labels_since_training, now=knowledge.now,
                             last_attempt=knowledge.last_attempt, last_failure=knowledge.last_failure,
                             critical_quality=knowledge.critical_quality,
                             training_rows=knowledge.training_rows)
        if blocking_guards(facts, model.triggers):
            return Verdict(False)
        when = timing(decision.severity, knowledge.now, model.triggers)
        if when == "wait" and not _quiet_window_before(knowledge.now, knowledge.next_batch_in, model.triggers):
            return Verdict(False)  # the sensor would still be waiting when the next batch starts
        return Verdict(when != "monitor", decision.trigger, decision.severity, decision.reason)


class Seed(Ours):
    """The design documents' rule set: fixed drift thresholds, label-volume bands, point gates."""

    name = "seed"

    def model_for(self, model):
        return model.model_copy(update={
            "decision": model.decision.model_copy(update={"policy": "seed"}),
            "gates": model.gates.model_copy(update={"comparison": "point"}),
        })


def _quiet_window_before(now: dt.datetime, within: dt.timedelta, triggers) -> bool:
    """Does the quiet window open before ``now + within``? (hourly steps: windows are whole hours)"""
    hours = int(within / dt.timedelta(hours=1))
    return any(in_quiet_window(now + dt.timedelta(hours=h), triggers) for h in range(hours + 1))


def parse_policy(text: str) -> Policy:
    text = text.strip()
    named = {"never": Never, "always": Always, "ours": Ours, "seed": Seed}
    if text in named:
        return named[text]()
    match = re.fullmatch(r"periodic:(\d+)(?:\+(\d+))?", text)
    if match and int(match.group(1)) >= 1:
        return Periodic(int(match.group(1)), None if match.group(2) is None else int(match.group(2)))
    raise DataError(f"unknown --policy {text!r}: use never, always, periodic:K or periodic:K+S (K >= 1 batches, "
                    "first at batch S), ours or seed")
