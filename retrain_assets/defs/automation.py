"""The one way a per-model sensor is declared.

Every model's sensors (triggers, post-deploy watch, shadow decision) share their cadence and their
default: evaluated every ``triggers.sensor_interval_s`` and running from the start, because a model that
is declared is a model to watch; only what they look at differs.
"""

import dagster as dg

from retrain_assets.settings import ModelSettings


def model_sensor(model: ModelSettings, *, name: str, job_name: str, description: str):
    """``@dg.sensor`` with the model's cadence, running by default."""
    return dg.sensor(
        name=name,
        job_name=job_name,
        minimum_interval_seconds=model.triggers.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=description,
    )
