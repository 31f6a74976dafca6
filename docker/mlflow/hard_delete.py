"""Hard-delete `invoke verify`'s throwaway experiment, its runs and their artifacts.

Run inside the MLflow container as the database's owner:
`python3 hard_delete.py EXPERIMENT_ID NAME PREFIX`; prints one JSON line.

MLflow's REST API only marks an experiment deleted: it would keep its name and ID, and
the next experiment a student makes would get the ID after it. `mlflow gc` removes the
rows but not the ID's high-water mark, and needs the experiment soft-deleted first. So
this deletes the rows itself, and therefore refuses any database whose schema is not
the one it was written for (MLflow's Alembic revision below): a newer MLflow must be
looked at before verify may delete anything in its database.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
from pathlib import Path

# MLflow 3.13.0's schema head (`mlflow.store.db.utils._get_latest_schema_revision()`).
KNOWN_SCHEMA = "da6fb0208061"
ARTIFACTS_SCHEME = "mlflow-artifacts:/"


class Refused(Exception):
    """Nothing was deleted; the message says why."""


def schema_revision(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def delete_rows(
    conn: sqlite3.Connection, experiment_id: str, name: str, prefix: str
) -> tuple[list[str], str]:
    """Delete the experiment's rows in one transaction: (its run IDs, artifact location)."""
    revision = schema_revision(conn)
    if revision != KNOWN_SCHEMA:
        raise Refused(
            f"MLflow's database schema is {revision}, this script knows {KNOWN_SCHEMA}: "
            "nothing deleted (update docker/mlflow/hard_delete.py for the new schema)"
        )
    # On: a row still pointing at the experiment or a run aborts the whole transaction.
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(
            "SELECT name, artifact_location FROM experiments WHERE experiment_id = ?",
            (experiment_id,),
        ).fetchone()
        if row is None or row[0] != name or not name.startswith(prefix):
            raise Refused(f"experiment {experiment_id} is not {name!r}: nothing deleted")
        location = str(row[1] or "")
        runs = [
            str(r)
            for (r,) in conn.execute(
                "SELECT run_uuid FROM runs WHERE experiment_id = ?", (experiment_id,)
            )
        ]
        tables = [
            str(t) for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        columns = {t: {c[1] for c in conn.execute(f'PRAGMA table_info("{t}")')} for t in tables}
        children = [t for t in tables if t not in ("runs", "experiments")]
        for table in children:
            if "run_uuid" in columns[table]:
                conn.executemany(f'DELETE FROM "{table}" WHERE run_uuid = ?', [(r,) for r in runs])
        conn.executemany("DELETE FROM runs WHERE run_uuid = ?", [(r,) for r in runs])
        for table in children:
            if "experiment_id" in columns[table]:
                conn.execute(f'DELETE FROM "{table}" WHERE experiment_id = ?', (experiment_id,))
        conn.execute("DELETE FROM experiments WHERE experiment_id = ?", (experiment_id,))
        # MLflow's experiments table has a plain INTEGER PRIMARY KEY: SQLite gives a new
        # experiment max(id) + 1, so without this row the next ID is what it was before.
        # A table made with AUTOINCREMENT keeps a high-water mark instead: wind it back
        # when it still points at this experiment.
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
            conn.execute(
                "UPDATE sqlite_sequence SET seq = seq - 1 WHERE name = 'experiments' AND seq = ?",
                (int(experiment_id),),
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return runs, location


def delete_artifacts(root: Path, location: str, runs: list[str]) -> list[str]:
    removed: list[str] = []
    if not location.startswith(ARTIFACTS_SCHEME):
        return removed
    folder = (root / location.removeprefix(ARTIFACTS_SCHEME)).resolve()
    if folder.parent != root:
        raise Refused(f"artifact folder {folder} is outside {root}: left in place")
    for run in runs:
        if (folder / run).exists():
            shutil.rmtree(folder / run)
            removed.append(str(folder / run))
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        removed.append(str(folder))
    return removed


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: hard_delete.py EXPERIMENT_ID NAME PREFIX", file=sys.stderr)
        return 2
    experiment_id, name, prefix = argv
    db = os.environ["LAB_MLFLOW_DB"]
    root = Path(os.environ["LAB_MLFLOW_ARTIFACTS"]).resolve()
    try:
        if os.stat(db).st_uid != os.getuid():
            # SQLite would create the -wal/-shm files under this user, locking the server out.
            raise Refused(
                f"runs as uid {os.getuid()}, but {db} belongs to uid {os.stat(db).st_uid}"
            )
        conn = sqlite3.connect(db, timeout=10, isolation_level=None)
        try:
            runs, location = delete_rows(conn, experiment_id, name, prefix)
        finally:
            conn.close()
        removed = delete_artifacts(root, location, runs)
    except Refused as exc:
        print(exc, file=sys.stderr)
        return 1
    print(json.dumps({"runs": len(runs), "removed": removed}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
