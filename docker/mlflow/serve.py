"""Start the MLflow tracking server with the lab's storage layout.

Runs as the container's command. Everything tunable comes from the environment,
which compose.yaml fills from the lab's settings.
"""

import os
import sqlite3
import sys
from pathlib import Path

PORT = "8080"


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
    sys.stdout.flush()
    os.execvp(args[0], args)


if __name__ == "__main__":
    main()
