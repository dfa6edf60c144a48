"""The live comparisons behind the post-deploy watch and the shadow decision."""

import numpy as np

from retrain_assets.monitoring.watch import canary_verdict, compare_latency, post_deploy_verdict, shadow_verdict
from retrain_assets.config.deployment import DeploymentSettings

SETTINGS = DeploymentSettings(watch_min_samples=100, shadow_min_samples=100)
rng = np.random.default_rng(0)
TRUE = rng.integers(0, 2, 400)
GOOD = np.where(rng.random(400) < 0.9, TRUE, 1 - TRUE)  # 90% right
BAD = np.where(rng.random(400) < 0.6, TRUE, 1 - TRUE)  # 60% right


def test_a_p99_latency_spike_rolls_back_even_when_quality_holds():
    before, spiked = rng.gamma(4, 5, 500), rng.gamma(4, 5, 500) * 3  # p99 ~50 ms -> ~150 ms
    verdict = post_deploy_verdict(GOOD, TRUE, GOOD, TRUE, "classification", SETTINGS,
                                  live_latency_ms=spiked, before_latency_ms=before)
    assert verdict.worse and verdict.judged and "p99 latency" in verdict.message
    assert verdict.new["p99_latency_ms"] > 2 * verdict.old["p99_latency_ms"]


def test_latency_below_the_floor_or_ratio_is_not_a_spike():
    fast = rng.gamma(4, 0.5, 500)  # ~5 ms: tripled is still under the 20 ms floor
    assert not compare_latency(fast * 3, fast, SETTINGS).worse
    slow = rng.gamma(4, 10, 500)
    assert not compare_latency(slow * 1.5, slow, SETTINGS).worse  # x1.5 < x2.0
    assert not compare_latency(slow[:10], slow, SETTINGS).judged  # too few timed requests yet


def test_a_quality_drop_rolls_back_and_too_few_labels_wait():
    assert post_deploy_verdict(BAD, TRUE, GOOD, TRUE, "classification", SETTINGS).worse
    early = post_deploy_verdict(BAD[:20], TRUE[:20], GOOD, TRUE, "classification", SETTINGS)
    assert not early.worse and not early.judged and "judging at 100" in early.message
    healthy = post_deploy_verdict(GOOD, TRUE, GOOD, TRUE, "classification", SETTINGS,
                                  live_latency_ms=np.full(200, 5.0), before_latency_ms=np.full(200, 5.0))
    assert healthy.judged and not healthy.worse


def test_regression_watch_uses_relative_mae():
    truth = rng.normal(100, 10, 300)
    assert post_deploy_verdict(truth + rng.normal(0, 6, 300), truth, truth + rng.normal(0, 3, 300), truth,
                               "regression", SETTINGS).worse
    assert not post_deploy_verdict(truth + rng.normal(0, 3, 300), truth, truth + rng.normal(0, 3, 300), truth,
                                   "regression", SETTINGS).worse


def test_shadow_compares_candidate_and_production_on_the_same_requests():
    passed = shadow_verdict(GOOD, BAD, TRUE, "classification", SETTINGS)
    assert passed.judged and not passed.worse and passed.message.startswith("shadow F1")
    rejected = shadow_verdict(BAD, GOOD, TRUE, "classification", SETTINGS)
    assert rejected.worse and "vs" in rejected.message and "production" in rejected.message
    assert not shadow_verdict(GOOD[:50], BAD[:50], TRUE[:50], "classification", SETTINGS).judged


def test_the_error_rate_criterion_needs_enough_requests_and_is_absolute():
    from retrain_assets.monitoring.watch import absolute_verdict

    failing = absolute_verdict(GOOD, TRUE, "classification", SETTINGS, requests=(90, 10))
    assert failing.worse and failing.new["error_rate"] == 0.1
    assert "10 of 100 requests failed" in failing.message
    assert not absolute_verdict(GOOD, TRUE, "classification", SETTINGS, requests=(97, 3)).worse
    assert "error rate" not in absolute_verdict(GOOD, TRUE, "classification", SETTINGS, requests=(5, 5)).message  # 10 < 20
    off = DeploymentSettings(rollback_max_error_rate=None)
    assert not absolute_verdict(GOOD, TRUE, "classification", off, requests=(10, 90)).worse
    assert post_deploy_verdict(GOOD, TRUE, GOOD, TRUE, "classification", SETTINGS, requests=(50, 50)).worse


def test_a_canary_step_is_judged_on_labels_against_production_and_fails_on_any_crash():
    advance = canary_verdict(GOOD, TRUE, GOOD, TRUE, "classification", SETTINGS)
    assert advance.judged and not advance.worse and advance.message.startswith("canary F1")  # latency never holds it
    back = canary_verdict(BAD, TRUE, GOOD, TRUE, "classification", SETTINGS)
    assert back.worse and "production" in back.message
    wait = canary_verdict(GOOD[:60], TRUE[:60], GOOD, TRUE, "classification", SETTINGS)
    assert not wait.judged and not wait.worse and "judging at 100" in wait.message
    spiked = canary_verdict(GOOD[:60], TRUE[:60], GOOD, TRUE, "classification", SETTINGS,
                            canary_latency_ms=np.full(50, 900.0), production_latency_ms=np.full(50, 30.0))
    assert spiked.worse and spiked.judged and "p99 latency" in spiked.message  # a spike does not wait for labels
    crashed = canary_verdict(GOOD, TRUE, GOOD, TRUE, "classification", SETTINGS, failures=2)
    assert crashed.worse and crashed.judged and "failed to score 2 request(s)" in crashed.message


def test_the_phases_follow_the_promotion_time():
    import datetime as dt

    from retrain_assets.monitoring.watch import deployment_phase

    promoted = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)
    at = lambda **delta: deployment_phase(promoted, None, promoted + dt.timedelta(**delta), SETTINGS)  # noqa: E731
    assert at(minutes=29) == ("watch", promoted + dt.timedelta(minutes=30))
    assert at(minutes=30) == ("close_watch", promoted + dt.timedelta(hours=24))
    assert at(hours=23, minutes=59)[0] == "close_watch"
    assert at(hours=24) == ("validation", promoted + dt.timedelta(days=7))
    assert at(days=8)[0] == "validation"  # over: the sensor marks it proven
    assert deployment_phase(promoted, promoted, promoted + dt.timedelta(days=9), SETTINGS) == ("proven", None)


def test_absolute_criteria_roll_back_whatever_the_previous_model_did():
    """Seed 002: accuracy < 75 % or latency > 5 s. A model as bad as its predecessor still goes."""
    from retrain_assets.monitoring.watch import absolute_verdict

    bad = absolute_verdict(BAD, TRUE, "classification", SETTINGS)
    assert bad.worse and "live accuracy 0.59" in bad.message and "< 0.75" in bad.message
    assert post_deploy_verdict(BAD, TRUE, BAD, TRUE, "classification", SETTINGS).worse  # equal to before: still out
    fine = absolute_verdict(GOOD, TRUE, "classification", SETTINGS, live_latency_ms=np.full(50, 120.0))
    assert not fine.worse and fine.judged
    slow = absolute_verdict(GOOD, TRUE, "classification", SETTINGS, live_latency_ms=np.full(50, 6000.0))
    assert slow.worse and "p99 latency 6000.0 ms > 5000 ms" in slow.message
    early = absolute_verdict(BAD[:50], TRUE[:50], "classification", SETTINGS)
    assert not early.worse and not early.judged  # 50 labeled < watch_min_samples: no verdict yet
    off = DeploymentSettings(watch_min_samples=100, rollback_min_accuracy=None, rollback_max_latency_ms=None)
    assert not absolute_verdict(BAD, TRUE, "classification", off).worse
    assert not absolute_verdict(np.zeros(200), np.ones(200), "regression", SETTINGS).worse  # no accuracy floor
