"""Canary routing: which requests a candidate in canary answers, and how its failures are reported.

Both serving paths (the HTTP API and the demo's traffic) use these, so a canary sees the same share of
requests, and fails the same way, whichever path served them.
"""

import hashlib

from retrain_assets.store import ModelVersion, MonitoringStore

CANARY_FAILURE = "canary_failure"  # trigger_type of the event row recorded when a canary fails a request


def routes_to_canary(request_id: str, share: float) -> bool:
    """Whether the request with this id goes to the canary answering ``share`` of the traffic.

    An unkeyed 64-bit BLAKE2b hash of the id, read as a fraction of 2**64: uniform over ids, the same in
    every process and on every retry (Python's ``hash`` is salted per process, so it cannot be used), and
    monotone in ``share``: a request that went to the canary at 5 % still goes there at 50 %."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < share * 2.0**64


def record_canary_failure(store: MonitoringStore, model_name: str, version: ModelVersion, error: str, rows: int) -> int:
    """The event row that says a canary failed to score a request (production answered it); the canary
    sensor rolls the canary back when it finds one."""
    return store.events.record_trigger(
        model_name, trigger_type=CANARY_FAILURE, severity="HIGH", attempted=False,
        reason=f"canary {version.label} failed to score a request of {rows} rows: {error}",
        metrics={"version": version.label, "error": error, "rows": rows})
