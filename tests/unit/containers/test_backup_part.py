"""backup_part.py (runs in the images) on temp folders: write beside, swap, undo, refuse."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlflow_lab import PROJECT_ROOT
from tests.helpers import container_module, small_tmpfs

bp = container_module("mlflow", "backup_part")
SCRIPT = PROJECT_ROOT / "docker" / "mlflow" / "backup_part.py"
SKIP = "mlflowserver-lab/mlartifacts"


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under root (ours excluded) with its content or kind."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel.split("/")[0] in bp.OURS:
            continue
        if path.is_symlink():
            found[rel] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = path.read_text(encoding="utf-8")
    return found


def make_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")


OLD = {"a.txt": "old a", "notes/n.ipynb": "old n", "mlflowserver-lab/readme": "old r"}
NEW = {"a.txt": "new a", "b/c.txt": "new c", "mlflowserver-lab/readme": "new r"}


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, bytes]:
    """A workspace with the old files and a mount-like skipped folder; the new tree as tar."""
    root = tmp_path / "workspace"
    make_tree(root, OLD)
    make_tree(root, {f"{SKIP}/1/artifact.txt": "another mount's"})
    source = tmp_path / "source"
    make_tree(source, NEW)
    make_tree(source, {f"{SKIP}/never.txt": "skipped on dump"})
    out = io.BytesIO()
    bp.dump_tree(str(source), SKIP, out)
    return root, out.getvalue()


def test_a_tree_is_staged_beside_then_swapped_and_the_skipped_mount_is_left_alone(
    trees: tuple[Path, bytes],
) -> None:
    root, data = trees
    before = snapshot(root)
    bp.stage_tree(str(root), io.BytesIO(data))
    assert snapshot(root) == before, "staging writes beside, changes nothing"
    bp.swap_tree(str(root), SKIP)
    bp.finish_tree(str(root), SKIP)
    after = snapshot(root)
    assert {k: v for k, v in after.items() if not k.startswith(SKIP)} == {
        **{k: v for k, v in NEW.items()},
        "b": "dir",
        "mlflowserver-lab": "dir",
    }
    assert after[f"{SKIP}/1/artifact.txt"] == "another mount's"
    assert sorted(os.listdir(root)) == ["a.txt", "b", "mlflowserver-lab"], "nothing of ours left"


class Stop(Exception):
    pass


def renames_then_stop(monkeypatch: pytest.MonkeyPatch, allowed: int) -> None:
    real = os.rename
    count = [0]

    def rename(a: Any, b: Any) -> None:
        if count[0] >= allowed:
            raise Stop
        count[0] += 1
        real(a, b)

    monkeypatch.setattr(bp.os, "rename", rename)


@pytest.mark.parametrize("allowed", range(8))
def test_a_swap_stopped_after_any_rename_is_undone_to_the_old_tree(
    trees: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch, allowed: int
) -> None:
    root, data = trees
    before = snapshot(root)
    bp.stage_tree(str(root), io.BytesIO(data))
    with monkeypatch.context() as patch:
        renames_then_stop(patch, allowed)
        with contextlib.suppress(Stop):
            bp.swap_tree(str(root), SKIP)
    bp.undo_tree(str(root), SKIP)
    assert snapshot(root) == before
    assert not any(name in bp.OURS for name in os.listdir(root))


def test_undo_after_a_complete_swap_brings_the_old_tree_back(trees: tuple[Path, bytes]) -> None:
    root, data = trees
    before = snapshot(root)
    bp.stage_tree(str(root), io.BytesIO(data))
    bp.swap_tree(str(root), SKIP)
    bp.undo_tree(str(root), SKIP)
    assert snapshot(root) == before


def make_db(path: Path, value: str, *, wal_only: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # keep the row in the WAL only
    conn.execute("CREATE TABLE IF NOT EXISTS t (v TEXT)")
    conn.execute("INSERT INTO t VALUES (?)", (value,))
    conn.commit()
    return conn


def values(path: Path) -> list[str]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return [row[0] for row in conn.execute("SELECT v FROM t")]


def db_bytes(tmp_path: Path, value: str) -> bytes:
    source = tmp_path / f"{value}.db"
    make_db(source, value).close()
    out = io.BytesIO()
    bp.dump_sqlite(str(source), out)
    return out.getvalue()


def test_a_database_is_written_beside_swapped_and_undone_with_its_wal(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    path = folder / "mlflow.db"
    live = make_db(path, "old")  # open: the row sits in mlflow.db-wal, as after a crash
    assert (folder / "mlflow.db-wal").stat().st_size > 0
    new = db_bytes(tmp_path, "new")
    bp.stage_sqlite(str(path), io.BytesIO(new))
    assert values(path) == ["old"]
    live.close()
    bp.swap_sqlite(str(path))
    assert values(path) == ["new"], "the old WAL was not replayed onto the new database"
    bp.undo_sqlite(str(path))
    assert values(path) == ["old"], "the old WAL was folded into the old file first"
    bp.stage_sqlite(str(path), io.BytesIO(new))
    bp.swap_sqlite(str(path))
    bp.finish_sqlite(str(path))
    assert values(path) == ["new"]
    # (The -wal/-shm files, if any, are this test's read-only connections'.)
    assert [n for n in os.listdir(folder) if not n.endswith(("-wal", "-shm"))] == ["mlflow.db"]


def test_a_damaged_database_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    path = tmp_path / "mlflow.db"
    make_db(path, "old").close()
    with pytest.raises(bp.Refused):
        bp.stage_sqlite(str(path), io.BytesIO(b"not a database" * 100))
    assert values(path) == ["old"]
    assert not (tmp_path / "mlflow.db.restoring").exists()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def tar_of(*members: tarfile.TarInfo) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(b"") if info.isreg() else None)
    return out.getvalue()


UNSAFE = {
    "absolute": [member("/etc/evil")],
    "dotdot": [member("a/../../evil")],
    "symlink out": [member("l", tarfile.SYMTYPE, "../../etc")],
    "absolute symlink": [member("l", tarfile.SYMTYPE, "/etc")],
    "hardlink out": [member("h", tarfile.LNKTYPE, "../outside")],
    "device": [member("dev", tarfile.CHRTYPE)],
    "fifo": [member("fifo", tarfile.FIFOTYPE)],
    # A link that stays inside by its name, then a file written through a link chain.
    "through a link": [
        member("d", tarfile.DIRTYPE),
        member("d/up", tarfile.SYMTYPE, ".."),
        member("d/up/escape", tarfile.SYMTYPE, "../x"),
    ],
}


@pytest.mark.parametrize("filters", [True, False], ids=["with-filters", "python-3.11.2"])
@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_members_are_refused_and_nothing_is_written_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, filters: bool
) -> None:
    if not filters:  # as in the images, whose Python has no extraction filters
        monkeypatch.setattr(bp, "SAFE", {})
    root = tmp_path / "deep" / "root"
    root.mkdir(parents=True)
    make_tree(root, {"keep.txt": "kept"})
    with pytest.raises((bp.Refused, tarfile.FilterError)):
        bp.stage_tree(str(root), io.BytesIO(tar_of(*UNSAFE[case])))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["deep", "keep.txt", "root"]


def run_script(*args: str, stdin: Any = None, **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def test_an_interrupted_stage_removes_its_stage_and_says_so(trees: tuple[Path, bytes]) -> None:
    root, data = trees
    before = snapshot(root)
    proc = run_script("stage", "tree", str(root), stdin=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(data[: len(data) // 2])  # half a tar, and the rest never comes
    proc.stdin.flush()
    deadline = time.monotonic() + 10
    while not (root / bp.STAGE_DIR).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130
    assert b"interrupted" in err
    assert snapshot(root) == before
    assert not (root / bp.STAGE_DIR).exists()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real file system of 1 MiB that fills up (a tmpfs; needs root)."""
    with small_tmpfs(tmp_path / "small", "1m") as folder:
        yield folder


def big_db(path: Path, megabytes: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (v TEXT)")
        conn.executemany("INSERT INTO t VALUES (?)", [("x" * 1000,)] * (megabytes * 1000))
    conn.close()


def test_a_database_that_does_not_fit_leaves_the_old_one_and_says_disk_full(
    tmp_path: Path, small_disk: Path
) -> None:
    path = small_disk / "mlflow.db"
    make_db(path, "old").close()
    new = tmp_path / "new.db"
    big_db(new, 2)
    with new.open("rb") as source:
        proc = run_script("stage", "sqlite", str(path), stdin=source)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert b"no space left on device" in err
    assert not (small_disk / "mlflow.db.restoring").exists()
    assert values(path) == ["old"]


def test_a_tree_that_does_not_fit_leaves_the_old_one_and_says_disk_full(
    tmp_path: Path, small_disk: Path
) -> None:
    make_tree(small_disk, OLD)
    before = snapshot(small_disk)
    source = tmp_path / "big"
    make_tree(source, {f"f{i}.txt": "y" * 100_000 for i in range(20)})
    out = io.BytesIO()
    bp.dump_tree(str(source), "", out)
    proc = run_script("stage", "tree", str(small_disk), stdin=subprocess.PIPE)
    _, err = proc.communicate(out.getvalue(), timeout=60)
    assert proc.returncode == 3, err
    assert snapshot(small_disk) == before
    assert not (small_disk / bp.STAGE_DIR).exists()


def test_paths_from_the_image_environment_are_expanded(tmp_path: Path) -> None:
    path = tmp_path / "mlflow.db"
    make_db(path, "old").close()
    proc = run_script(
        "dump", "sqlite", "$LAB_MLFLOW_DB", env={**os.environ, "LAB_MLFLOW_DB": str(path)}
    )
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.startswith(b"SQLite format 3")
