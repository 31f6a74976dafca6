"""Start the MLflow tracking server with the lab's storage layout.

Runs as the container's command. Everything tunable comes from the environment,
which compose.yaml fills from the lab's settings.

Unlike `mlflow server`, which imports MLflow in a CLI process and again in a uvicorn
child, this initialises the stores and serves in one process: MLflow is imported once,
so the server is ready sooner and idle memory is one interpreter, not two.
"""

import gc
import os
import sqlite3
from pathlib import Path
from typing import Any

PORT = 8080

# Request handler threads per uvicorn worker (anyio's default is 40); lab_app.py applies
# it. SQLite takes one writer at a time: a few threads that queue fairly in anyio beat
# 40 that poll for the lock. Measured with 30 clients x 50 log_batch calls on 2 cores:
# p99 2.2-2.3 s with 40, 0.9 s with 8, 0.5 s with 4; 8 leaves room for a few slow
# artifact up/downloads without holding up the rest.
REQUEST_THREADS = 8

# MLflow's log_batch keeps one pooled connection while its helpers (_log_params,
# _log_metrics, _set_tags) each take a second one. With fewer connections than handlers
# the pool deadlocks under load: every connection is held by an outer call waiting for
# an inner one until the 30 s pool timeout fails it ("QueuePool limit of size 5
# overflow 10 reached", which is what SQLAlchemy's defaults gave a class of 30). Two per
# handler, plus one for the event loop, can never run out. Only POOL_SIZE stay open when
# idle; the overflow ones close after use, so idle memory is unchanged.
POOL_SIZE = 5
POOL_CAPACITY = 2 * REQUEST_THREADS + 1

# The artifact store is served by this server: experiments get mlflow-artifacts:/<id>.
ARTIFACT_ROOT = "mlflow-artifacts:/"


def prepare_database(db_path: Path) -> None:
    # WAL lets readers (the UI, search_runs) proceed while a run is being logged and
    # survives a killed container without a torn journal; it is stored in the file,
    # so setting it once before MLflow creates its tables is enough.
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def server_environment(store_uri: str, artifacts: str) -> dict[str, str]:
    """What `mlflow server` would hand its uvicorn workers, plus the lab's sizing."""
    from mlflow.server import constants

    env = {
        constants.BACKEND_STORE_URI_ENV_VAR: store_uri,
        constants.REGISTRY_STORE_URI_ENV_VAR: store_uri,
        constants.ARTIFACT_ROOT_ENV_VAR: ARTIFACT_ROOT,
        constants.SERVE_ARTIFACTS_ENV_VAR: "true",
        constants.ARTIFACTS_DESTINATION_ENV_VAR: artifacts,
        "_MLFLOW_SGI_NAME": "uvicorn",
        "LAB_MLFLOW_REQUEST_THREADS": str(REQUEST_THREADS),
        "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(POOL_SIZE),
        "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(POOL_CAPACITY - POOL_SIZE),
    }
    allowed_hosts = os.environ.get("LAB_MLFLOW_ALLOWED_HOSTS")
    if allowed_hosts:
        env["MLFLOW_SERVER_ALLOWED_HOSTS"] = allowed_hosts
    return env


def main() -> None:
    # Loading MLflow's server creates a few hundred thousand objects that all live on;
    # the cyclic collector would scan them over and over for nothing. Off while they
    # load (a quarter of the start-up time), then on again, with freeze() keeping them
    # out of every later collection.
    gc.disable()
    db_path = Path(os.environ["LAB_MLFLOW_DB"])
    store_uri = f"sqlite:///{db_path}"
    prepare_database(db_path)
    # Set before MLflow's server modules are imported, and inherited by any extra worker.
    os.environ.update(server_environment(store_uri, os.environ["LAB_MLFLOW_ARTIFACTS"]))

    import uvicorn
    from mlflow.server.handlers import initialize_backend_stores

    # Creates or migrates the tables before the first request, as `mlflow server` does.
    initialize_backend_stores(store_uri, store_uri, ARTIFACT_ROOT)
    import lab_app  # noqa: F401  (what uvicorn serves below, loaded with the collector off)

    gc.enable()
    gc.freeze()
    uvicorn.run(
        "lab_app:app",
        host="0.0.0.0",
        port=PORT,
        workers=int(os.environ.get("LAB_MLFLOW_WORKERS", "1")),
        log_config=log_config(),
        app_dir=str(Path(__file__).resolve().parent),
    )


def log_config() -> dict[str, object]:
    """MLflow's uvicorn logging, minus the health probe's line every second."""
    import mlflow.server
    import yaml

    path = Path(mlflow.server.__file__).parent / "uvicorn_log_config.yaml"
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    config.setdefault("filters", {})["no_health_probe"] = {"()": "lab_app.HealthCheckFilter"}
    for handler in config.get("handlers", {}).values():
        handler.setdefault("filters", []).append("no_health_probe")
    return config


if __name__ == "__main__":
    main()
