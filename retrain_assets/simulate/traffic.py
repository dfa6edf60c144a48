"""Realistic traffic for a telecom operator's two models: the demo's and the tests' data source.

The customer population has numeric features (tenure, monthly charges, support calls, data usage) and
categorical ones (contract, payment method, region). Two outcomes are drawn from it:

* ``churned`` (classification, model ``churn``): a fixed logistic model of the features, sharp enough that
  a good model reaches the default gates (precision >= 0.85, recall >= 0.80);
* ``next_month_usage_gb`` (regression, model ``demand``): next month's data usage, mostly this month's
  usage scaled by contract and region, plus noise (a good model reaches R2 ~0.9).

Three switches reproduce what goes wrong in production:

* ``covariate_drift`` (0..1): the population moves (higher charges, more support calls, more
  month-to-month contracts) while the churn mechanism stays; drift tests must see it.
* ``concept_drift``: the mechanisms themselves change (long tenure no longer protects, price sensitivity
  doubles; usage grows with the price plan and the regions' usage levels swap); features look the same,
  errors grow.
* ``poison_fraction`` (0..1): that share of labels is replaced by noise (churn: coin flips at the base
  rate; usage: another customer's value); a model trained on it must fail the gates.
"""

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

FEATURES = (
    ("tenure_months", "numeric"),
    ("monthly_charges", "numeric"),
    ("support_calls", "numeric"),
    ("data_usage_gb", "numeric"),
    ("contract", "categorical"),
    ("payment_method", "categorical"),
    ("region", "categorical"),
)
TARGET = "churned"
USAGE_TARGET = "next_month_usage_gb"
USAGE_FEATURES = tuple(f for f in FEATURES if f[0] != "payment_method")
CONTRACTS = ("month_to_month", "one_year", "two_year")
PAYMENTS = ("card", "bank_transfer", "electronic_check", "mailed_check")
REGIONS = ("north", "south", "east", "west")


@dataclass(frozen=True)
class TrafficScenario:
    covariate_drift: float = 0.0
    concept_drift: bool = False
    poison_fraction: float = 0.0
    unsafe_fraction: float = 0.01  # rows the serving side flags safe_to_send = False


def _churn_logit(frame: pd.DataFrame, concept_drift: bool) -> np.ndarray:
    contract_effect = frame["contract"].map({"month_to_month": 1.6, "one_year": -0.8, "two_year": -2.4}).to_numpy()
    echeck = (frame["payment_method"] == "electronic_check").to_numpy() * 0.8
    tenure = frame["tenure_months"].to_numpy()
    charges = frame["monthly_charges"].to_numpy()
    calls = frame["support_calls"].to_numpy()
    usage = frame["data_usage_gb"].to_numpy()
    tenure_effect = -0.09 * (tenure - 24) if not concept_drift else 0.06 * (tenure - 24)
    price_effect = 0.06 * (charges - 70) * (2.0 if concept_drift else 1.0)
    logit = -0.6 + 1.1 * (calls - 1.5) + price_effect + tenure_effect + contract_effect + echeck - 0.02 * (usage - 20)
    return 3.5 * logit


def _next_month_usage(frame: pd.DataFrame, concept_drift: bool, rng: np.random.Generator) -> np.ndarray:
    usage = frame["data_usage_gb"].to_numpy()
    monthly = (frame["contract"] == "month_to_month").to_numpy()
    region_level = {"north": 3.0, "south": -2.0, "east": 1.0, "west": -1.0}
    if concept_drift:  # a new unlimited plan: usage follows the price paid, and the regions swap levels
        region_level = {"north": -3.0, "south": 4.0, "east": -1.0, "west": 2.0}
    price = 0.25 * (frame["monthly_charges"].to_numpy() - 70) if concept_drift else 0.0
    expected = (
        usage * (1.0 + 0.15 * monthly)
        + 0.05 * frame["tenure_months"].to_numpy()
        + frame["region"].map(region_level).to_numpy()
        - 0.8 * frame["support_calls"].to_numpy()
        + price
    )
    return np.clip(expected + rng.normal(0.0, 3.0, len(frame)), 0.0, None).round(2)


def generate_traffic(
    n_rows: int,
    *,
    start: dt.datetime | None = None,
    interval: dt.timedelta = dt.timedelta(seconds=30),
    scenario: TrafficScenario = TrafficScenario(),
    seed: int = 0,
    id_prefix: str = "req",
) -> pd.DataFrame:
    """``n_rows`` customers with features, both true outcomes (``churned``, ``next_month_usage_gb``), a
    timestamp, a request id and safe_to_send."""
    if n_rows < 0:
        raise ValueError("n_rows must be >= 0")
    rng = np.random.default_rng(seed)
    shift = float(np.clip(scenario.covariate_drift, 0.0, 1.0))
    start = start or dt.datetime.now(dt.timezone.utc) - interval * n_rows
    contract_p = np.array([0.45 + 0.35 * shift, 0.30 - 0.15 * shift, 0.25 - 0.20 * shift])
    frame = pd.DataFrame(
        {
            "tenure_months": np.clip(rng.gamma(2.0, 12.0, n_rows) * (1 - 0.4 * shift), 0, 72).round(1),
            "monthly_charges": np.clip(rng.normal(70 + 30 * shift, 20, n_rows), 18, 160).round(2),
            "support_calls": rng.poisson(1.5 + 1.5 * shift, n_rows).astype(float),
            "data_usage_gb": np.round(rng.lognormal(3.0 + 0.3 * shift, 0.6, n_rows), 2),
            "contract": rng.choice(CONTRACTS, n_rows, p=contract_p / contract_p.sum()),
            "payment_method": rng.choice(PAYMENTS, n_rows, p=[0.35, 0.25, 0.3, 0.1]),
            "region": rng.choice(REGIONS, n_rows),
        }
    )
    probability = 1.0 / (1.0 + np.exp(-_churn_logit(frame, scenario.concept_drift)))
    labels = (rng.random(n_rows) < probability).astype(int)
    # The usage outcome draws from its own stream: adding it left every churn column as it was.
    usage_rng = np.random.default_rng([seed, 1])
    usage = _next_month_usage(frame, scenario.concept_drift, usage_rng)
    if scenario.poison_fraction > 0:
        poisoned = rng.random(n_rows) < scenario.poison_fraction
        labels = np.where(poisoned, (rng.random(n_rows) < labels.mean()).astype(int), labels)
        usage = np.where(poisoned, usage_rng.permutation(usage), usage)
    frame[TARGET] = labels
    frame[USAGE_TARGET] = usage
    frame["timestamp"] = pd.to_datetime([start + interval * i for i in range(n_rows)], utc=True)
    frame["request_id"] = [f"{id_prefix}-{seed}-{i:07d}" for i in range(n_rows)]
    frame["safe_to_send"] = rng.random(n_rows) >= scenario.unsafe_fraction
    return frame


def model_config(name: str = "churn", task: str = "classification") -> dict:
    """The config block of a model trained on this traffic (used by tests and the demo): the churn
    classifier, or with ``task="regression"`` the usage regressor."""
    if task == "regression":
        return {
            "name": name,
            "task": "regression",
            "target": USAGE_TARGET,
            "features": [{"name": n, "type": t} for n, t in USAGE_FEATURES],
            # usage is well predictable (R2 ~0.9): a candidate far below learned from noise
            "gates": {"min_r2": 0.6},
        }
    return {
        "name": name,
        "task": "classification",
        "target": TARGET,
        "positive_label": 1,
        "features": [{"name": n, "type": t} for n, t in FEATURES],
        # churn is well predictable from these features (AUC ~0.97): labels that are not are poisoned
        "gates": {"min_auc": 0.75},
    }
