"""Start the MLflow tracking server with the lab's storage layout.

Runs as the container's command. Everything tunable comes from the environment,
which compose.yaml fills from the lab's settings.
"""

import os
import sqlite3
import sys
from pathlib import Path

PORT = "8080"

HOOKS_DIR = Path(__file__).resolve().parent / "hooks"

# Request handler threads per uvicorn worker (anyio's default is 40); hooks/
# sitecustomize.py applies it. SQLite takes one writer at a time: a few threads that
# queue fairly in anyio beat 40 that poll for the lock. Measured with 30 clients x 50
# log_batch calls on 2 cores: p99 2.2-2.3 s with 40, 0.9 s with 8, 0.5 s with 4; 8
# leaves room for a few slow artifact up/downloads without holding up the rest.
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
SERVER_ENV = {
    "LAB_MLFLOW_REQUEST_THREADS": str(REQUEST_THREADS),
    "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(POOL_SIZE),
    "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(POOL_CAPACITY - POOL_SIZE),
}


def prepare_database(db_path: Path) -> None:
    # WAL lets readers (the UI, search_runs) proceed while a run is being logged and
    # survives a killed container without a torn journal; it is stored in the file,
    # so setting it once before MLflow creates its tables is enough.
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def main() -> None:
    db_path = Path(os.environ["LAB_MLFLOW_DB"])
    artifacts = os.environ["LAB_MLFLOW_ARTIFACTS"]
    prepare_database(db_path)
    args = [
        "mlflow",
        "server",
        "--host",
        "0.0.0.0",
        "--port",
        PORT,
        "--backend-store-uri",
        f"sqlite:///{db_path}",
        "--artifacts-destination",
        artifacts,
        "--serve-artifacts",
        "--workers",
        os.environ.get("LAB_MLFLOW_WORKERS", "1"),
    ]
    allowed_hosts = os.environ.get("LAB_MLFLOW_ALLOWED_HOSTS")
    if allowed_hosts:
        args += ["--allowed-hosts", allowed_hosts]
    # The lab's values win over anything inherited: they are what the load test measured.
    os.environ.update(SERVER_ENV)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HOOKS_DIR), os.environ.get("PYTHONPATH", "")) if p
    )
    sys.stdout.flush()
    os.execvp(args[0], args)


if __name__ == "__main__":
    main()
