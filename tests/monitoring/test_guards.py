"""Guards and timing of automatic triggers, as pure rules."""

import datetime as dt

from retrain_assets.monitoring.guards import TriggerFacts, blocking_guards, in_quiet_window, timing
from retrain_assets.settings import TriggerSettings

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
SETTINGS = TriggerSettings()


def facts(**changes):
    return TriggerFacts(**{"severity": "HIGH", "labeled_rows": 5000, "now": NOW, **changes})


def test_nothing_blocks_a_healthy_trigger():
    assert blocking_guards(facts(), SETTINGS) == []


def test_each_guard_names_itself():
    assert "min_samples 100" in blocking_guards(facts(labeled_rows=40), SETTINGS)[0]
    failed = blocking_guards(facts(last_failure=["gate: significance"]), SETTINGS)[0]
    assert "latest retrain failed (gate: significance) and no label arrived since" in failed
    assert "P1 incident #3 database down" in blocking_guards(facts(open_p1=["#3 database down"]), SETTINGS)[0]
    assert "already queued or running (run abcdef12)" in blocking_guards(facts(runs_in_flight=["abcdef1234"]), SETTINGS)[0]
    cooldown = blocking_guards(facts(last_attempt=NOW - dt.timedelta(hours=3)), SETTINGS)
    assert cooldown and "next allowed 2026-06-02 09:00" in cooldown[0]


def test_a_retrain_needs_new_labels_worth_a_share_of_the_last_training():
    """A window that changed by less than min_new_labels_fraction (10 %) gives back nearly the same model:
    5,000 new labels against a 68,785-row training wait for the next batch; CRITICAL does not bypass it."""
    small = blocking_guards(facts(labeled_rows=5000, training_rows=68_785), SETTINGS)
    assert small == ["only 5000 labeled rows since the last training (min_samples 100; min_new_labels_fraction 0.1 "
                     "of the 68,785 rows of the last training)"]
    assert blocking_guards(facts(labeled_rows=5000, training_rows=68_785, severity="CRITICAL"), SETTINGS) == small
    assert blocking_guards(facts(labeled_rows=6879, training_rows=68_785), SETTINGS) == []
    assert blocking_guards(facts(labeled_rows=336, training_rows=1344), SETTINGS) == []  # a week of four
    seed = TriggerSettings(min_samples=10_000, min_new_labels_fraction=0)  # seed 004's literal prerequisite
    assert "min_samples 10000)" in blocking_guards(facts(labeled_rows=9_999, training_rows=68_785), seed)[0]


def test_cooldown_ends_and_critical_bypasses_it():
    assert blocking_guards(facts(last_attempt=NOW - dt.timedelta(hours=25)), SETTINGS) == []
    assert blocking_guards(facts(severity="CRITICAL", last_attempt=NOW - dt.timedelta(minutes=5)), SETTINGS) == []
    assert blocking_guards(facts(last_attempt=NOW), TriggerSettings(cooldown_hours=0)) == []


def test_timing_by_severity_and_quiet_window():
    assert timing("CRITICAL", NOW, SETTINGS) == "now" and timing("HIGH", NOW, SETTINGS) == "now"
    assert timing("LOW", NOW, SETTINGS) == "monitor"
    assert timing("MEDIUM", NOW, SETTINGS) == "wait"  # noon is outside 01:00-05:00
    assert timing("MEDIUM", NOW.replace(hour=2), SETTINGS) == "now"
    assert not in_quiet_window(NOW.replace(hour=5), SETTINGS)
    overnight = TriggerSettings(quiet_start_hour=22, quiet_end_hour=4)
    assert in_quiet_window(NOW.replace(hour=23), overnight) and in_quiet_window(NOW.replace(hour=3), overnight)
    assert not in_quiet_window(NOW.replace(hour=12), overnight)
    berlin = TriggerSettings(timezone="Europe/Berlin")  # 01:00 UTC is 03:00 in Berlin (summer time)
    assert in_quiet_window(NOW.replace(hour=1), berlin) and not in_quiet_window(NOW.replace(hour=4), berlin)


def test_critical_data_quality_blocks_whatever_the_severity():
    reason = "dataset v7-2026-06-01: null_rates failed at 2026-06-01 09:00 UTC"
    for severity in ("HIGH", "CRITICAL"):
        blocked = blocking_guards(facts(severity=severity, critical_quality=reason), SETTINGS)
        assert blocked == [f"data quality critical within the last 24 h ({reason}): fix the source; a newer "
                           "dataset that passes (a manual retrain) lifts the block sooner"]
