"""Realistic traffic for a subscription-churn model: the demo's and the tests' data source.

The customer population has numeric features (tenure, monthly charges, support calls, data usage) and
categorical ones (contract, payment method, region). Churn follows a fixed logistic model of them, sharp
enough that a good model reaches the default gates (precision >= 0.85, recall >= 0.80).

Three switches reproduce what goes wrong in production:

* ``covariate_drift`` (0..1): the population moves (higher charges, more support calls, more
  month-to-month contracts) while the churn mechanism stays; drift tests must see it.
* ``concept_drift``: the mechanism itself changes (long tenure no longer protects, price sensitivity
  doubles); features look the same, errors grow.
* ``poison_fraction`` (0..1): that share of labels is replaced by coin flips at the base rate; a model
  trained on it must fail the gates.
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


def generate_traffic(
    n_rows: int,
    *,
    start: dt.datetime | None = None,
    interval: dt.timedelta = dt.timedelta(seconds=30),
    scenario: TrafficScenario = TrafficScenario(),
    seed: int = 0,
    id_prefix: str = "req",
) -> pd.DataFrame:
    """``n_rows`` customers with features, the true label, a timestamp, a request id and safe_to_send."""
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
    if scenario.poison_fraction > 0:
        poisoned = rng.random(n_rows) < scenario.poison_fraction
        labels = np.where(poisoned, (rng.random(n_rows) < labels.mean()).astype(int), labels)
    frame[TARGET] = labels
    frame["timestamp"] = pd.to_datetime([start + interval * i for i in range(n_rows)], utc=True)
    frame["request_id"] = [f"{id_prefix}-{seed}-{i:07d}" for i in range(n_rows)]
    frame["safe_to_send"] = rng.random(n_rows) >= scenario.unsafe_fraction
    return frame


def model_config(name: str = "churn") -> dict:
    """The config block of a model trained on this traffic (used by tests and the demo)."""
    return {
        "name": name,
        "task": "classification",
        "target": TARGET,
        "positive_label": 1,
        "features": [{"name": n, "type": t} for n, t in FEATURES],
        # churn is well predictable from these features (AUC ~0.97): labels that are not are poisoned
        "gates": {"min_auc": 0.75},
    }
