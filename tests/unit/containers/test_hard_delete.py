"""docker/mlflow/hard_delete.py on a tiny SQLite database shaped like MLflow's."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import container_module

hard_delete = container_module("mlflow", "hard_delete")
PREFIX = "mlflow-lab-verify-"
NAME = f"{PREFIX}0123456789ab"

SCHEMA = """
CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY);
CREATE TABLE experiments (
    experiment_id INTEGER NOT NULL PRIMARY KEY,
    name VARCHAR(256) NOT NULL UNIQUE,
    artifact_location VARCHAR(256),
    lifecycle_stage VARCHAR(32)
);
CREATE TABLE experiment_tags (
    key VARCHAR(250) NOT NULL, value VARCHAR(5000),
    experiment_id INTEGER NOT NULL REFERENCES experiments (experiment_id),
    PRIMARY KEY (key, experiment_id)
);
CREATE TABLE runs (
    run_uuid VARCHAR(32) NOT NULL PRIMARY KEY,
    name VARCHAR(250),
    experiment_id INTEGER REFERENCES experiments (experiment_id)
);
CREATE TABLE metrics (
    key VARCHAR(250) NOT NULL, value FLOAT NOT NULL, step BIGINT NOT NULL,
    run_uuid VARCHAR(32) NOT NULL REFERENCES runs (run_uuid),
    PRIMARY KEY (key, step, run_uuid)
);
CREATE TABLE params (
    key VARCHAR(250) NOT NULL, value VARCHAR(8000) NOT NULL,
    run_uuid VARCHAR(32) NOT NULL REFERENCES runs (run_uuid),
    PRIMARY KEY (key, run_uuid)
);
"""


def count(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])


def everything(conn: sqlite3.Connection) -> dict[str, int]:
    tables = ("experiments", "experiment_tags", "runs", "metrics", "params")
    return {table: count(conn, table) for table in tables}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A student's experiment 1 with a run, and verify's experiment 2 with two runs."""
    path = tmp_path / "mlflow.db"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.execute("INSERT INTO alembic_version VALUES (?)", (hard_delete.KNOWN_SCHEMA,))
    conn.executemany(
        "INSERT INTO experiments VALUES (?, ?, ?, 'active')",
        [(1, "my-experiment", "mlflow-artifacts:/1"), (2, NAME, "mlflow-artifacts:/2")],
    )
    conn.executemany("INSERT INTO experiment_tags VALUES ('note', 'x', ?)", [(1,), (2,)])
    conn.executemany(
        "INSERT INTO runs VALUES (?, ?, ?)",
        [("s1", "student run", 1), ("v1", "lab-verify", 2), ("v2", "lab-verify", 2)],
    )
    for run in ("s1", "v1", "v2"):
        conn.execute("INSERT INTO metrics VALUES ('rmse', 0.25, 0, ?)", (run,))
        conn.execute("INSERT INTO params VALUES ('alpha', '0.5', ?)", (run,))
    conn.commit()
    conn.close()
    return path


@pytest.fixture
def conn(db: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(db, isolation_level=None)
    yield connection
    connection.close()


def test_the_verify_experiment_and_its_runs_go_and_nothing_else(
    conn: sqlite3.Connection,
) -> None:
    runs, location = hard_delete.delete_rows(conn, "2", NAME, PREFIX)
    assert sorted(runs) == ["v1", "v2"] and location == "mlflow-artifacts:/2"
    assert everything(conn) == {
        "experiments": 1,
        "experiment_tags": 1,
        "runs": 1,
        "metrics": 1,
        "params": 1,
    }
    assert conn.execute("SELECT run_uuid FROM metrics").fetchall() == [("s1",)]
    assert conn.execute("SELECT name FROM experiments").fetchall() == [("my-experiment",)]
    # The next experiment a student makes gets the ID it would have had anyway.
    conn.execute("INSERT INTO experiments (name) VALUES ('next')")
    assert conn.execute("SELECT experiment_id FROM experiments WHERE name = 'next'").fetchone() == (
        2,
    )


@pytest.mark.parametrize("revision", ["0123456789ab", None])
def test_an_unknown_schema_is_refused_and_nothing_deleted(
    conn: sqlite3.Connection, revision: str | None
) -> None:
    if revision is None:
        conn.execute("DROP TABLE alembic_version")
    else:
        conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    before = everything(conn)
    with pytest.raises(hard_delete.Refused) as raised:
        hard_delete.delete_rows(conn, "2", NAME, PREFIX)
    assert str(raised.value).startswith(
        f"MLflow's database schema is {revision}, this script knows {hard_delete.KNOWN_SCHEMA}: "
        "nothing deleted"
    )
    assert everything(conn) == before


@pytest.mark.parametrize(
    ("experiment_id", "name", "prefix"),
    [
        ("2", f"{PREFIX}other", PREFIX),  # the ID is not the named one
        ("1", "my-experiment", PREFIX),  # a student's experiment: not verify's prefix
        ("9", NAME, PREFIX),  # no such experiment
    ],
)
def test_a_wrong_name_or_prefix_is_refused_and_nothing_deleted(
    conn: sqlite3.Connection, experiment_id: str, name: str, prefix: str
) -> None:
    before = everything(conn)
    with pytest.raises(hard_delete.Refused, match=rf"^experiment {experiment_id} is not "):
        hard_delete.delete_rows(conn, experiment_id, name, prefix)
    assert everything(conn) == before
    assert not conn.in_transaction, "the transaction was rolled back"


def test_a_row_left_pointing_at_a_run_aborts_the_whole_transaction(
    conn: sqlite3.Connection,
) -> None:
    # A table the script does not know, referencing runs without a run_uuid column name.
    conn.execute("CREATE TABLE inputs (source_id VARCHAR(36) REFERENCES runs (run_uuid))")
    conn.execute("INSERT INTO inputs VALUES ('v1')")
    before = everything(conn)
    with pytest.raises(sqlite3.IntegrityError):
        hard_delete.delete_rows(conn, "2", NAME, PREFIX)
    assert everything(conn) == before


def test_artifacts_of_the_runs_and_then_the_empty_folder_go(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    for run in ("v1", "v2"):
        (root / "2" / run / "artifacts").mkdir(parents=True)
        (root / "2" / run / "artifacts" / "verify.txt").write_text("x")
    (root / "1" / "s1").mkdir(parents=True)
    removed = hard_delete.delete_artifacts(root, "mlflow-artifacts:/2", ["v1", "v2"])
    assert removed == [str(root / "2" / "v1"), str(root / "2" / "v2"), str(root / "2")]
    assert sorted(p.name for p in root.iterdir()) == ["1"]
    assert hard_delete.delete_artifacts(root, "file:///elsewhere", ["v1"]) == []
    with pytest.raises(hard_delete.Refused, match="is outside"):
        hard_delete.delete_artifacts(root, "mlflow-artifacts:/../../etc", ["v1"])


def test_main_prints_one_json_line_or_one_refusal(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "artifacts"
    (root / "2" / "v1").mkdir(parents=True)
    monkeypatch.setenv("LAB_MLFLOW_DB", str(db))
    monkeypatch.setenv("LAB_MLFLOW_ARTIFACTS", str(root))
    assert hard_delete.main(["2", "mlflow-lab-verify-nope", PREFIX]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == "experiment 2 is not 'mlflow-lab-verify-nope': nothing deleted\n"
    assert hard_delete.main(["2", NAME, PREFIX]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"runs": 2, "removed": [str(root / "2" / "v1"), str(root / "2")]}
    assert hard_delete.main(["2"]) == 2


def test_an_autoincrement_high_water_mark_is_wound_back(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "auto.db", isolation_level=None)
    conn.executescript(
        SCHEMA.replace(
            "experiment_id INTEGER NOT NULL PRIMARY KEY,",
            "experiment_id INTEGER PRIMARY KEY AUTOINCREMENT,",
        )
    )
    conn.execute("INSERT INTO alembic_version VALUES (?)", (hard_delete.KNOWN_SCHEMA,))
    conn.execute("INSERT INTO experiments (name) VALUES ('my-experiment')")
    conn.execute("INSERT INTO experiments (name) VALUES (?)", (NAME,))
    hard_delete.delete_rows(conn, "2", NAME, PREFIX)
    conn.execute("INSERT INTO experiments (name) VALUES ('next')")
    assert conn.execute("SELECT max(experiment_id) FROM experiments").fetchone() == (2,)
    conn.close()
