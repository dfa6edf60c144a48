import datetime as dt

import pytest

from retrain_assets.settings import settings_from_dict
from retrain_assets.simulate import TrafficScenario, generate_traffic, model_config

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)


def churn_model(**overrides):
    return settings_from_dict({"models": [{**model_config(), "training": {"tuning_trials": 0}, **overrides}]}).models[0]


def labeled_traffic(rows, seed=0, scenario=TrafficScenario(), end=NOW):
    start = end - dt.timedelta(seconds=10 * rows)
    frame = generate_traffic(rows, start=start, interval=dt.timedelta(seconds=10), scenario=scenario, seed=seed,
                             id_prefix=f"s{seed}")
    return frame.assign(label_id=range(len(frame)))


@pytest.fixture(scope="session")
def model():
    return churn_model()
