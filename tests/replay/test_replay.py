"""The replay harness on small generated data: policies, label delay, no look-ahead, gates, JSON, bad input."""

import json

import numpy as np
import pandas as pd
import pytest

from retrain_assets.cli import main
from retrain_assets.errors import DataError
from retrain_assets.replay.data import prepare_table
from retrain_assets.replay.harness import Replay, replay_model, run_replay
from retrain_assets.replay.policies import Always, Never, Ours, Periodic, Policy, Verdict, parse_policy

BATCH, FIRST, BATCHES = 200, 800, 10


def table_frame(batches=BATCHES, flip_at=4, seed=0) -> pd.DataFrame:
    """Two features; the label rule flips (and x1 shifts) from batch ``flip_at`` on: real concept drift."""
    rng = np.random.default_rng(seed)
    n = FIRST + batches * BATCH
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    drifted = np.arange(n) >= FIRST + flip_at * BATCH
    x1 = np.where(drifted, x1 + 1.0, x1)
    label = np.where(drifted, x1 - x2 > 1.0, x1 + x2 > 0).astype(int)
    time = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC")
    return pd.DataFrame({"when": time.astype(str), "x1": x1, "x2": x2, "y": label})


def prepared(frame=None, **options):
    options = {"target": "y", "time_column": "when", "batch_size": BATCH, "window": str(FIRST), **options}
    return prepare_table(table_frame() if frame is None else frame, **options)


@pytest.fixture(scope="module")
def table():
    return prepared()


@pytest.fixture(scope="module")
def runs(table):
    """Each policy replayed once (labels one batch late), shared by the tests below."""
    results = run_replay(table, replay_model(table, label_delay=1), [Never(), Always(), Periodic(3), Ours()])
    return {r.policy: r for r in results}


def test_never_always_and_periodic_retrain_as_often_as_they_say(runs):
    never, always, periodic = runs["never"], runs["always"], runs["periodic:3"]
    assert never.retrains == 0 and len(never.batches) == BATCHES
    assert always.retrains == BATCHES - 1  # before every batch but the first (the first model was just trained)
    assert periodic.retrains == len([i for i in range(1, BATCHES) if i % 3 == 0]) == 3
    assert always.promotions + len(always.rejected_candidates) == always.retrains
    late = slice(8, None)  # by batch 8 the sliding window holds mostly new-rule labels; the first model never will
    assert np.mean([b["accuracy"] for b in always.batches[late]]) > np.mean([b["accuracy"] for b in never.batches[late]]) + 0.1


class Recorder(Policy):
    name = "recorder"

    def __init__(self):
        self.seen = []

    def decide(self, knowledge, model):
        self.seen.append(knowledge)
        return Verdict(False)


@pytest.mark.parametrize("delay", [0, 1, 3])
def test_labels_arrive_label_delay_batches_late(table, delay):
    recorder = Recorder()
    Replay(table, replay_model(table, label_delay=delay), recorder, delay).run()
    for knowledge in recorder.seen:
        arrived = max(knowledge.batch - delay, 0)  # batches 0 .. i-1-d are labeled before batch i
        assert knowledge.labeled_rows == FIRST + arrived * BATCH
        assert len(knowledge.labeled_since) == arrived * BATCH  # what production did not train on
        newest = arrived * BATCH if knowledge.batch == 1 else (BATCH if knowledge.batch - 1 - delay >= 0 else 0)
        assert knowledge.newest_batch == newest  # arrived since the previous decision
        assert len(knowledge.recent_inputs) == BATCH  # one monitoring window: the newest served batch


def test_nothing_from_the_future_changes_a_decision(table, runs):
    """Rewrite everything from batch 7 on (features and labels): batches 0-6 must replay identically."""
    future = table_frame()
    later = np.arange(len(future)) >= FIRST + 7 * BATCH
    future.loc[later, "x1"] = -future.loc[later, "x1"] * 3
    future.loc[later, "y"] = 1 - future.loc[later, "y"]
    model = replay_model(table, label_delay=1)
    rewritten = run_replay(prepared(future), model, [Ours(), Periodic(3)])
    for result in rewritten:
        assert result.batches[:7] == runs[result.policy].batches[:7]
        assert result.batches[7:] != runs[result.policy].batches[7:]  # the rewrite did reach the replay


def test_ours_is_the_products_policy_and_reacts_to_the_flip(runs):
    triggered = [b for b in runs["ours"].batches if b["retrained"]]
    assert {b["batch"] for b in triggered} & {5, 6}, "the drift from batch 4 on must trigger a retrain at once"
    assert len([b for b in triggered if b["batch"] < 5]) <= 1  # before the flip was served: at most one chance alarm
    assert {b["trigger"] for b in triggered} <= {"drift", "performance", "concept_drift", "estimated_performance"}
    assert all(b["reason"] for b in triggered)


def test_a_candidate_failing_a_gate_is_rejected_and_production_stays(tmp_path, table):
    gates = tmp_path / "gates.yaml"  # the first model (old rule) passes the floor
    gates.write_text("gates:\n  enabled: [absolute_thresholds, smoke_test]\n  min_accuracy: 0.9\n"
                     "  min_precision: null\n  min_recall: null\n")
    model = replay_model(table, label_delay=0, overrides_file=gates)
    # One retrain, at batch 5: trained mostly on old-rule rows, tested on the newest (new-rule) ones.
    result = Replay(table, model, Periodic(5), 0).run()
    assert result.retrains == 1 and result.promotions == 0
    assert result.rejected_candidates[0]["failed_gates"] == ["absolute_thresholds"]
    assert {b["model_version"] for b in result.batches} == {"v1"}


def test_json_output_has_one_object_per_policy_with_the_documented_keys(tmp_path, capsys):
    path = tmp_path / "data.csv"
    table_frame(batches=4).to_csv(path, index=False)
    code = main(["replay", "--data", str(path), "--target", "y", "--time-column", "when", "--batch-size", str(BATCH),
                 "--window", str(FIRST), "--policy", "never", "--policy", "periodic:2", "--json"])
    assert code == 0
    captured = capsys.readouterr()
    results = json.loads(captured.out)  # stdout holds the JSON alone...
    assert [r["policy"] for r in results] == ["never", "periodic:2"]
    assert "8/8" in captured.err and "periodic:2" in captured.err  # ...the progress (2 policies x 4 batches) is on stderr
    for r in results:
        assert {"policy", "mean_accuracy", "mean_f1", "retrains", "promotions", "rejected_candidates", "compute_s",
                "batches"} <= set(r)
        assert len(r["batches"]) == 4 and {"batch", "accuracy", "f1", "model_version", "retrained"} <= set(r["batches"][0])
    assert results[1]["retrains"] == 1


def test_bad_input_is_a_clear_error_and_exit_code_2(tmp_path, capsys):
    frame = table_frame(batches=3)
    cases = {
        "do not parse as timestamps": frame.assign(when=["yesterday"] * len(frame)),
        "single class": frame.assign(y=1),
        "inside the first window": frame.head(FIRST - 10),
        "have no values from batch 1": frame.assign(x2=np.where(np.arange(len(frame)) >= FIRST + BATCH, np.nan, frame["x2"])),
    }
    for expected, bad in cases.items():
        path = tmp_path / "bad.csv"
        bad.to_csv(path, index=False)
        code = main(["replay", "--data", str(path), "--target", "y", "--time-column", "when",
                     "--batch-size", str(BATCH), "--window", str(FIRST), "--policy", "never"])
        assert code == 2, expected
        assert expected in capsys.readouterr().err
    with pytest.raises(DataError, match="unknown --policy"):
        parse_policy("sometimes")


def test_a_regression_target_is_replayed_with_mae_and_r2():
    rng = np.random.default_rng(3)
    n = FIRST + 4 * BATCH
    x = rng.normal(size=n)
    frame = pd.DataFrame({"when": pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC").astype(str), "x": x,
                          "region": rng.choice(["north", "south"], n), "y": 3 * x + rng.normal(0, 0.3, n)})
    table = prepared(frame)
    assert table.task == "regression" and table.categorical == ["region"]
    never, periodic = (r.to_dict() for r in run_replay(table, replay_model(table, label_delay=1), [Never(), Periodic(2)]))
    assert never["mean_accuracy"] is None and never["mean_mae"] < 0.6 and never["mean_r2"] > 0.9
    assert {"mae", "r2"} <= set(periodic["batches"][0]) and periodic["retrains"] == 1


def test_seed_policy_periodic_phase_and_ungated_replay(table):
    model = replay_model(table, label_delay=1)
    phased, seed = run_replay(table, model, [parse_policy("periodic:3+1"), parse_policy("seed")])
    assert [b["batch"] for b in phased.batches if b["retrained"]] == [1, 4, 7] and phased.policy == "periodic:3+1"
    assert seed.policy == "seed" and {b["trigger"] for b in seed.batches if b["retrained"]} <= {"drift", "performance", "data_volume"}
    ungated = Replay(table, model, Always(), 1, gated=False).run()
    assert ungated.promotions == ungated.retrains == BATCHES - 1 and not ungated.rejected_candidates


def test_a_failed_retrain_waits_for_new_labels(tmp_path, table):
    """After a rejection the same evidence does not retrigger: until a label arrives the guard holds every
    automatic trigger back, and then the realized tests count only the labels newer than the failed dataset."""
    from retrain_assets.monitoring.guards import TriggerFacts, blocking_guards

    lenient = replay_model(table, label_delay=1)
    replay = Replay(table, lenient, Never(), 1)
    assert replay._retrain(table.batches[0].start.to_pydatetime())["promoted"]
    replay.labels_known_upto = 2  # batches 0-2 labeled
    gates = tmp_path / "gates.yaml"
    gates.write_text("gates:\n  enabled: [absolute_thresholds]\n  min_accuracy: 0.999\n  min_precision: null\n"
                     "  min_recall: null\n")
    replay.model = replay_model(table, label_delay=1, overrides_file=gates)
    failed = replay._retrain(table.batches[4].start.to_pydatetime())
    assert not failed["promoted"] and failed["failed_gates"] == ["absolute_thresholds"]
    stuck = replay._knowledge(4)
    assert stuck.last_failure == ["absolute_thresholds"] and len(stuck.labeled_since) == 0
    facts = TriggerFacts(severity="HIGH", labeled_rows=stuck.labeled_rows, now=stuck.now, last_failure=stuck.last_failure)
    assert "latest retrain failed (absolute_thresholds)" in blocking_guards(facts, lenient.triggers)[0]
    replay.labels_known_upto = 3  # a newer labeled batch arrives
    fresh = replay._knowledge(5)
    assert fresh.last_failure == [] and len(fresh.labeled_since) == BATCH and fresh.newest_batch == BATCH
    span = (table.batches[5].start - table.batches[4].start) / pd.Timedelta(days=1)
    assert stuck.model_age_days == 0 and fresh.model_age_days == pytest.approx(span)  # the challenge restarted the clock


def test_the_replay_applies_the_data_quality_block_as_the_sensors_do(table):
    """A dataset that failed data quality blocks the replay's automatic triggers for quality_block_hours, like
    gather_facts in a running deployment; a later dataset that passes lifts it."""
    import datetime as dt

    replay = Replay(table, replay_model(table, label_delay=1), Never(), 1)
    assert replay._retrain(table.batches[0].start.to_pydatetime())["promoted"]
    now = table.batches[3].start.to_pydatetime()
    replay.quality_failure = (now - dt.timedelta(hours=2), ["null_rates"])
    assert "null_rates failed" in replay._critical_quality(now)
    assert replay._critical_quality(now + dt.timedelta(hours=21, minutes=59)) != ""
    assert replay._critical_quality(now + dt.timedelta(hours=22)) == ""  # 24 h after the failed dataset
    assert replay._knowledge(3).critical_quality == replay._critical_quality(now)
    replay.labels_known_upto = 2
    outcome = replay._retrain(now)  # a newer dataset that passes data quality (whatever its gates say)
    assert not any(g.startswith("data_quality") for g in outcome.get("failed_gates", [])), outcome
    assert replay._critical_quality(now) == ""


def test_small_batches_still_make_a_valid_model_config():
    """A monitoring window of one small batch (50 rows) is below the live watch's evidence floor (100): the
    replay, which runs no watch, lowers that floor instead of refusing the configuration."""
    small = prepared(batch_size=50)
    model = replay_model(small, label_delay=1)
    assert (model.monitoring.window_rows, model.deployment.watch_min_samples) == (50, 50)


def test_a_warning_lasts_only_while_the_same_model_is_in_production(table, monkeypatch):
    """As the monitoring asset does: a warning at the previous decision counts as lasting only if that
    decision judged the same production version; after a promotion the new model starts afresh."""
    import retrain_assets.replay.policies as policies

    seen = []
    real = policies.gather_evidence

    def spy(*args, **kwargs):
        seen.append((kwargs["previous_warnings"], kwargs["days_since_verified"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(policies, "gather_evidence", spy)
    replay = Replay(table, replay_model(table, label_delay=1), Never(), 1)
    assert replay._retrain(table.batches[0].start.to_pydatetime())["promoted"]
    replay.labels_known_upto = 1
    knowledge = replay._knowledge(3)
    policy = Ours()
    policy.decide(knowledge, replay.model)
    policy.previous_warnings, policy.verified_at = ("drift",), knowledge.now
    policy.decide(knowledge, replay.model)  # the same model: its warning and verification carry over
    assert seen[-1][0] == ("drift",) and seen[-1][1] == 0.0
    policy.previous_warnings, policy.verified_at = ("drift",), knowledge.now
    replay.labels_known_upto = 2
    assert replay._retrain(table.batches[3].start.to_pydatetime())["promoted"]
    policy.decide(replay._knowledge(4), replay.model)  # a new production version: nothing carries over
    assert seen[-1] == ((), None)
