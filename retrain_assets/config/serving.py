"""Serving settings: the HTTP API's limits, the durable prediction log and how servers follow the registry."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ServingSettings(BaseModel):
    """The HTTP API's limits and the durable prediction log (``retrain serve``).

    Why these exist: what a client sends is bounded before it costs memory or a model call, and every
    row served reaches ``prediction_log`` or a file on local disk that says why not, whatever the database
    does meanwhile (restart, outage, a row it refuses).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_rows_per_request: int = Field(10_000, ge=1, description="Rows one /predict/batch request may carry (422 above).")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest request body accepted, in bytes (413 above), "
                                                                         "checked before the body is parsed.")
    max_category_length: int = Field(256, ge=1, description="Longest value of a categorical feature, in characters (422 above).")
    spill_dir: str | None = Field(None, description="Folder on local disk for rows the monitoring database cannot take now "
                                                    "(replayed when it is back and when the server starts) and for rows it "
                                                    "refuses (quarantine files). Default: prediction-spill/ next to the SQLite "
                                                    "database, else next to a local artifact_root, else ./.retrain/prediction-spill.")
    max_batch_rows: int = Field(1_000, ge=1, description="Requests for the same model version that wait together in a "
                                                         "server process are scored in one model call of at most "
                                                         "this many rows (a larger request runs alone; 1: each "
                                                         "request alone).")
    max_batch_wait_ms: float = Field(
        5.0, ge=0, le=1000, description="After a model call that answered several requests, how long after it (once "
                                        "its answers are handed over) the next call may wait for as many requests "
                                        "to be queued (the clients just answered, coming back, to whichever "
                                        "version), in milliseconds; 0: never "
                                        "waits. No request waits twice; one reaching an idle server, or after a "
                                        "call of one request, never waits. The default is about one model call of "
                                        "a scikit-learn pipeline (retrain_assets/serving/batching.py).")
    pin_workers: Literal["auto", "always", "never"] = Field(
        "auto", description="With `retrain serve --workers N`, pin each worker process to a CPU of its own: `auto` "
                            "when the workers are as many as the CPUs the server may use, `always` whenever there "
                            "are several workers, `never`. A pinned worker's GIL holder is not preempted by another "
                            "worker (retrain_assets/serving/cpu_pinning.py).")
    worker_start_seconds: int = Field(
        60, ge=1, description="With `retrain serve --workers N`: how long a worker process may take to answer the "
                              "supervisor: a new one, to load its models at a rolling restart (SIGHUP; the old one "
                              "serves until then, and is kept if the new one is not ready in time), and a running one, "
                              "to answer its liveness check before it is replaced. uvicorn's own 5 s aborted rolling "
                              "restarts on a busy machine, where loading the models takes longer.")
    log_queue_rows: int = Field(50_000, ge=1, description="Served rows held in memory for the log writer; beyond that a "
                                                          "request's rows go straight to the spill folder (bounded memory).")
    log_batch_rows: int = Field(5_000, ge=1, description="Rows written to prediction_log in one transaction (and read back "
                                                         "from a spill file at a time).")
    retry_attempts: int = Field(3, ge=0, description="Retries of a write that failed because the database did not answer, "
                                                     "before its rows go to the spill folder.")
    retry_initial_seconds: float = Field(0.25, gt=0, description="First wait before a retry; doubles at each retry and at each "
                                                                  "failed recovery probe.")
    retry_max_seconds: float = Field(10.0, gt=0, description="Longest wait between two recovery probes while the database is down.")
    database_timeout_seconds: float = Field(5.0, gt=0, description="How long the log writer waits for a connection "
                                                                   "(PostgreSQL connect_timeout) or a lock (SQLite busy "
                                                                   "timeout) before the write counts as failed.")
    shutdown_seconds: float = Field(10.0, ge=0, description="At shutdown, how long to keep writing queued rows to the "
                                                            "database before the rest goes to the spill folder.")
    registry_poll_seconds: float = Field(2.0, gt=0, le=300, description="How often each server process asks the registry "
                                                                        "(one small query) whether production, standby or "
                                                                        "shadow changed, and swaps to what it says: a "
                                                                        "promotion or rollback reaches traffic within about "
                                                                        "this delay, with no reload call.")
