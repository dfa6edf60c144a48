"""Great Expectations validation of training data: each named check fails on the defect it exists for."""

import datetime as dt

import numpy as np

from retrain_assets.training import QUALITY_CHECKS, validate_training_data
from tests.training.conftest import NOW, churn_model, labeled_traffic

REFERENCE = {"ranges": {"tenure_months": (0.0, 72.0), "monthly_charges": (18.0, 160.0),
                        "support_calls": (0.0, 12.0), "data_usage_gb": (1.0, 200.0)}, "classes": [0, 1]}


def verdicts(frame, model, reference=REFERENCE, now=NOW):
    results = validate_training_data(frame, model, reference=reference, now=now)
    assert [r.name for r in results] == list(QUALITY_CHECKS)
    return {r.name: r for r in results}


def test_good_data_passes_every_check(model):
    results = verdicts(labeled_traffic(500), model)
    assert all(r.passed for r in results.values()), {n: r.message for n, r in results.items() if not r.passed}


def test_each_defect_fails_its_own_check(model):
    frame = labeled_traffic(500)
    missing_column = verdicts(frame.drop(columns=["region"]), model)
    assert not missing_column["columns_and_types"].passed and "region" in missing_column["columns_and_types"].message

    text_numbers = frame.assign(monthly_charges=frame["monthly_charges"].astype(str))
    assert not verdicts(text_numbers, model)["columns_and_types"].passed

    nulls = frame.copy()
    nulls.loc[: int(len(frame) * 0.2), "support_calls"] = np.nan
    result = verdicts(nulls, model)["null_rates"]
    assert not result.passed and "support_calls" in result.message and result.observed["support_calls"] > 0.05

    absurd = frame.copy()
    absurd.loc[:20, "monthly_charges"] = 1e6
    result = verdicts(absurd, model)["value_ranges"]
    assert not result.passed and "monthly_charges" in result.message

    unknown_class = frame.copy()
    unknown_class.loc[:5, "churned"] = 7
    assert not verdicts(unknown_class, model)["labels"].passed

    one_class = frame.assign(churned=0)
    assert not verdicts(one_class, model, reference=None)["labels"].passed

    stale = verdicts(frame, model, now=NOW + dt.timedelta(days=10))["freshness"]
    assert not stale.passed and stale.observed > 72

    few = verdicts(frame.iloc[:50], model)["min_rows"]
    assert not few.passed and few.observed == 50


def test_drifted_but_plausible_values_do_not_block_a_retrain(model):
    frame = labeled_traffic(500)
    shifted = frame.assign(monthly_charges=frame["monthly_charges"] * 1.4)  # drift is why we retrain
    assert verdicts(shifted, model)["value_ranges"].passed


def test_first_model_without_reference_still_rejects_infinities(model):
    frame = labeled_traffic(500)
    frame.loc[:30, "data_usage_gb"] = np.inf
    assert not verdicts(frame, model, reference=None)["value_ranges"].passed


def test_limits_come_from_the_config():
    model = churn_model(dataset={"min_samples": 1000, "max_age_hours": 1})
    results = verdicts(labeled_traffic(500), model, now=NOW + dt.timedelta(hours=2))
    assert not results["min_rows"].passed and ">= 1000" in results["min_rows"].expected
    assert not results["freshness"].passed


def test_new_values_are_drift_impossible_ones_are_errors(model):
    """New categories and values beyond the production range are drift (the retrain is for them); values
    orders of magnitude off and values outside a feature's declared bounds or levels are errors."""
    frame = labeled_traffic(500)
    new_level = frame.copy()
    new_level.loc[:100, "contract"] = "lifetime"
    assert verdicts(new_level, model)["value_ranges"].passed
    spike = frame.copy()
    spike.loc[:20, "support_calls"] = 12 * 30  # 30x the reference max: a real spike, not a unit error
    assert verdicts(spike, model)["value_ranges"].passed
    units = frame.copy()
    units.loc[:20, "data_usage_gb"] = frame["data_usage_gb"] * 1e6  # bytes where GB were expected
    assert not verdicts(units, model)["value_ranges"].passed
    declared = churn_model(features=[
        {"name": "tenure_months", "type": "numeric", "min": 0},
        {"name": "monthly_charges", "type": "numeric"}, {"name": "support_calls", "type": "numeric"},
        {"name": "data_usage_gb", "type": "numeric"},
        {"name": "contract", "type": "categorical", "values": ["month_to_month", "one_year", "two_year"]},
        {"name": "payment_method", "type": "categorical"}, {"name": "region", "type": "categorical"}])
    negative = frame.copy()
    negative.loc[:20, "tenure_months"] = -3
    result = verdicts(negative, declared)["value_ranges"]
    assert not result.passed and "tenure_months" in result.message and "tenure_months in [0.0, inf]" in result.expected
    result = verdicts(new_level, declared)["value_ranges"]
    assert not result.passed and "contract" in result.message and "lifetime" in result.message
    few = frame.copy()
    few.loc[:2, "contract"] = "lifetime"
    assert verdicts(few, declared)["value_ranges"].passed  # range_mostly: 1 % may be off


def test_null_labels_fail_the_labels_check(model):
    frame = labeled_traffic(500).astype({"churned": "float"})
    frame.loc[:9, "churned"] = np.nan
    result = verdicts(frame, model)["labels"]
    assert not result.passed and "churned" in result.message


def test_a_feature_that_is_the_target_in_disguise_fails_the_leakage_check(model):
    frame = labeled_traffic(2000)
    assert verdicts(frame, model)["leakage"].passed  # the real features each predict churn only partly
    leaked = frame.assign(support_calls=frame["churned"] * 3 + 1)  # a field filled in after the outcome
    result = verdicts(leaked, model)["leakage"]
    assert not result.passed and "support_calls alone predicts churned" in result.message
    assert result.observed["support_calls"] >= 0.99 and "0.99" in result.expected


def test_leakage_is_judged_on_held_out_folds_not_memorized_ids():
    import pandas as pd

    from retrain_assets.training.quality import single_feature_scores

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"customer_id": np.arange(3000) * 7919 % 3001, "x": rng.normal(size=3000)})
    frame["y"] = (frame["x"] + rng.normal(0, 1, 3000) > 0).astype(int)
    model = churn_model(target="y", features=[{"name": "customer_id", "type": "numeric"}, {"name": "x", "type": "numeric"}])
    scores = single_feature_scores(frame, model)
    assert scores["customer_id"] < 0.6 and 0.6 < scores["x"] < 0.9  # an id predicts nothing on unseen rows


def test_a_few_infinities_fail_whatever_the_tolerance(model):
    frame = labeled_traffic(1000)
    frame.loc[:2, "monthly_charges"] = np.inf  # 0.3 %: under range_mostly's 1 %, but training would crash
    result = verdicts(frame, model)["value_ranges"]
    assert not result.passed and "monthly_charges" in result.message


def test_each_check_has_a_status_and_the_dataset_the_worst_of_them(model):
    """Seed 004's healthy / warning / critical: a check that passed while using more than half of a
    tolerance (nulls, out-of-range share, the newest row's age) is a warning; a failed one is critical."""
    from retrain_assets.training import quality_status

    frame = labeled_traffic(1000)
    healthy = verdicts(frame, model)
    assert {r.status for r in healthy.values()} == {"healthy"} and quality_status(healthy.values()) == "healthy"
    nulls = frame.copy()
    nulls.loc[: int(len(frame) * 0.035), "support_calls"] = np.nan  # 3.5 % of the 5 % allowed
    warned = verdicts(nulls, model)
    assert warned["null_rates"].passed and warned["null_rates"].status == "warning"
    assert "support_calls: 3.60% unexpected, more than half of the 5.00% tolerated" in warned["null_rates"].warnings[0]
    assert "passed with a warning" in warned["null_rates"].message and quality_status(warned.values()) == "warning"
    stale = verdicts(frame, model, now=NOW + dt.timedelta(hours=40))  # 40 h of the 72 h allowed
    assert stale["freshness"].status == "warning" and quality_status(stale.values()) == "warning"
    nulls.loc[: int(len(frame) * 0.2), "support_calls"] = np.nan
    assert quality_status(verdicts(nulls, model).values()) == "critical"
    stored = [{"name": "labels", "passed": True}, {"name": "null_rates", "passed": False}]  # rows stored before statuses
    assert quality_status(stored) == "critical" and quality_status(stored[:1]) == "healthy"
