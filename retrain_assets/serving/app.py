"""The app factory ``retrain serve`` hands to uvicorn, so that every worker process builds its own app.

Why a factory read from the environment: with ``--workers N`` uvicorn starts N fresh processes that
import the app by name; each must load the settings, its models, its prediction log writer and its
registry follower itself (nothing is shared but the database, the artifact store and, for metrics,
``PROMETHEUS_MULTIPROC_DIR``). The CLI passes its arguments through the environment variables every
other entry point already reads (``RETRAIN_CONFIG``, ``RETRAIN_DAGSTER_URL``), and asks the workers to pin
themselves to CPUs with ``RETRAIN_SERVE_PIN_CPUS``.
"""

import gc

from fastapi import FastAPI


def create_from_environment() -> FastAPI:
    from threadpoolctl import threadpool_limits

    from retrain_assets.serving.api import create_app
    from retrain_assets.serving.cpu_pinning import pin_worker_from_environment
    from retrain_assets.settings import load_settings

    pin_worker_from_environment()  # before any thread of the app starts: they inherit its CPU
    # Requests are served in parallel; one OpenMP/BLAS thread per prediction avoids oversubscribing cores.
    threadpool_limits(1)
    app = create_app(load_settings(None))
    # Everything loaded so far (libraries, models) lives as long as the process: out of the collector's
    # reach, a full collection no longer walks it in the middle of a request (tail latency).
    gc.freeze()
    return app
