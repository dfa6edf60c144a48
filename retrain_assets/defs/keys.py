"""Names shared by every part of the Dagster shell: asset keys, job names and run tags, per model."""

import dagster as dg

TAG_TRIGGER = "retrain/trigger"
TAG_SEVERITY = "retrain/severity"
TAG_REASON = "retrain/reason"
TAG_EVENT_ID = "retrain/event_id"
TAG_MODEL = "retrain/model"
# The retrain run whose gated candidate a promotion run promotes.
TAG_CANDIDATE_RUN = "retrain/candidate_run"
# Retrain and promotion runs only; dagster.yaml limits it to one queued-to-running run per value (model).
TAG_CONCURRENCY = "retrain/concurrency"
# On a rollback run requested by the watch: the production version it judged. The swap refuses to run if
# production changed meanwhile (a promotion between the request and the run), so it never restores the
# version the watch's verdict was not about.
TAG_ROLLBACK_FROM = "retrain/rollback_from"

# Dagster limits tag values; reasons are summarized in tags and kept whole in the events table.
MAX_TAG_LENGTH = 200


def asset_key(model_name: str, asset: str) -> dg.AssetKey:
    return dg.AssetKey([model_name, asset])


def retrain_job_name(model_name: str) -> str:
    return f"{model_name}_retrain"


def promote_job_name(model_name: str) -> str:
    return f"{model_name}_promote"


def monitor_job_name(model_name: str) -> str:
    return f"{model_name}_monitor"


def short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_TAG_LENGTH else text[: MAX_TAG_LENGTH - 3] + "..."


def run_trigger(tags: dict) -> tuple[str, str]:
    """(trigger type, reason) of a run, from the tags its sensor/schedule/launcher set."""
    if TAG_TRIGGER in tags:
        return tags[TAG_TRIGGER], tags.get(TAG_REASON, "")
    if "dagster/schedule_name" in tags:
        return "schedule", f"schedule {tags['dagster/schedule_name']}"
    if "dagster/sensor_name" in tags:
        return "sensor", f"sensor {tags['dagster/sensor_name']}"
    return "manual", tags.get(TAG_REASON, "launched by hand")
