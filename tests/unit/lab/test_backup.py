"""The backup file and the restore's host side, without Docker: manifest, checks, staging."""

from __future__ import annotations

import io
import sqlite3
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlflow_lab.core import settings
from mlflow_lab.core.errors import LabError
from mlflow_lab.lab import backup
from tests.helpers import container_module, isolate_settings, small_tmpfs

bp = container_module("mlflow", "backup_part")


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_settings(monkeypatch, tmp_path)


def tree_tar(root: Path, files: dict[str, str]) -> bytes:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    out = io.BytesIO()
    bp.dump_tree(str(root), "", out)
    return out.getvalue()


def make_backup(
    tmp_path: Path, *, workspace: bytes | None = None, rows: int = 10, edit: Any = None
) -> Path:
    parts = tmp_path / "parts"
    parts.mkdir()
    db = tmp_path / "live.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (v TEXT)")
        conn.executemany("INSERT INTO t VALUES (?)", [("x" * 1000,)] * rows)
    conn.close()
    with (parts / "mlflow.db").open("wb") as out:
        bp.dump_sqlite(str(db), out)
    (parts / "artifacts.tar").write_bytes(tree_tar(tmp_path / "art", {"1/a.txt": "artifact"}))
    (parts / "workspace.tar").write_bytes(
        workspace if workspace is not None else tree_tar(tmp_path / "ws", {"n.ipynb": "{}"})
    )
    listed = {
        p.name: {"size": (parts / p.name).stat().st_size, "sha256": backup._sha256(parts / p.name)}
        for p in backup.PARTS
    }
    document = backup.manifest_document(settings.load(), listed)
    if edit:
        edit(document)
    archive = tmp_path / "lab.tar.gz"
    backup.write_archive(archive, document, parts)
    return archive


def test_a_backup_reads_back_with_every_part_checked(tmp_path: Path) -> None:
    archive = make_backup(tmp_path)
    manifest = backup.validate(archive, settings.load())
    assert manifest["format"] == backup.FORMAT
    assert set(manifest["parts"]) == {p.name for p in backup.PARTS}
    state = settings.load().state_dir
    assert not list(state.glob(".restore-*")), "the unpacked copy is removed afterwards"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format="other"), "not an mlflow-lab backup"),
        (lambda d: d.update(version=9), "format version 9"),
        (lambda d: d["parts"]["artifacts.tar"].update(sha256="0" * 64), "artifacts.tar is"),
    ],
)
def test_a_wrong_backup_is_refused_in_one_line(tmp_path: Path, edit: Any, message: str) -> None:
    archive = make_backup(tmp_path, edit=edit)
    with pytest.raises(LabError, match=message) as caught:
        backup.validate(archive, settings.load())
    assert "\n" not in str(caught.value) and "nothing was changed" in str(caught.value)


def test_a_tree_part_with_an_unsafe_member_is_refused_before_anything_changes(
    tmp_path: Path,
) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        evil = tarfile.TarInfo("../../home/student/.bashrc")
        tar.addfile(evil, io.BytesIO(b""))
    archive = make_backup(tmp_path, workspace=out.getvalue())
    with pytest.raises(LabError, match=r"workspace\.tar holds an unsafe member"):
        backup.validate(archive, settings.load())


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real file system of 256 KiB that fills up (a tmpfs; needs root)."""
    with small_tmpfs(tmp_path / "small", "256k") as folder:
        yield folder


def test_a_good_backup_on_a_full_state_disk_is_a_disk_full_line_not_unusable(
    tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = make_backup(tmp_path, rows=2000)  # 2 MB of store: more than the disk holds
    monkeypatch.setenv("LAB_STATE_DIR", str(small_disk))
    with pytest.raises(LabError) as caught:
        backup.validate(archive, settings.load())
    line = str(caught.value)
    assert line.startswith(f"the disk holding {small_disk} is full"), line
    assert "not a usable" not in line and line.endswith("nothing was changed")
    assert list(small_disk.iterdir()) == [], "the partial unpack is removed"


def test_a_small_system_temp_folder_does_not_matter(
    tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = make_backup(tmp_path, rows=2000)
    monkeypatch.setenv("TMPDIR", str(small_disk))
    monkeypatch.setattr("tempfile.tempdir", None)
    assert backup.validate(archive, settings.load())["format"] == backup.FORMAT


class FakeLab:
    """The restore's Docker side recorded: which backup_part.py steps ran, one failing."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: tuple[str, str] | None, code: int):
        self.calls: list[tuple[str, str]] = []
        self.started = 0
        lab = backup.LabCompose
        monkeypatch.setattr(lab, "container", lambda self, service: f"c-{service}")
        monkeypatch.setattr(lab, "image", lambda self, service: f"i-{service}")
        monkeypatch.setattr(lab, "run", lambda self, *args, **kw: None)
        monkeypatch.setattr(backup.stack, "preflight", lambda lab: None)
        monkeypatch.setattr(backup.docker, "engine_version", lambda: "27")
        monkeypatch.setattr(backup.startup, "start", lambda compose: {})
        monkeypatch.setattr(backup.startup, "wait_ready", self._started)

        def write(compose: Any, lab: Any, output: Path, *, running: bool) -> None:
            if fail == ("safety", ""):
                raise OSError(28, "No space left on device")
            output.write_bytes(b"safety")

        def run(argv: list[str], part: backup.Part, action: str, **kw: Any) -> None:
            self.calls.append((action, part.name))
            if (action, part.name) == fail:
                result = backup.Result(("docker", "run"), code, "", "stage: no space left")
                raise backup.StepFailed(part, action, result)

        monkeypatch.setattr(backup, "_write", write)
        monkeypatch.setattr(backup, "_run", run)

    def _started(self, compose: Any, ids: Any) -> None:
        self.started += 1


@pytest.mark.parametrize(
    ("fail", "code", "undone", "message"),
    [
        (("safety", ""), 0, [], "safety backup could not be written and nothing was changed"),
        (("stage", "artifacts.tar"), 3, ["artifacts.tar", "mlflow.db"], "volumes is full"),
        (("stage", "workspace.tar"), 130, ["workspace.tar", "artifacts.tar", "mlflow.db"], "inter"),
        (("swap", "workspace.tar"), 1, ["workspace.tar", "artifacts.tar", "mlflow.db"], "failed"),
    ],
)
def test_a_restore_that_stops_anywhere_puts_the_old_data_back_and_says_so_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fail: tuple[str, str],
    code: int,
    undone: list[str],
    message: str,
) -> None:
    archive = make_backup(tmp_path)
    lab = FakeLab(monkeypatch, fail, code)
    with pytest.raises(LabError, match=message) as caught:
        backup.restore(settings.load(), archive, yes=True)
    line = str(caught.value)
    assert "\n" not in line
    assert "only partly" not in line and line.count("nothing was changed") == 1
    assert line.endswith("the lab runs with its data from before"), line
    assert [name for action, name in lab.calls if action == "undo"] == undone
    assert not any(action == "finish" for action, _ in lab.calls)
    assert lab.started == 1


def test_a_restore_keeps_a_safety_backup_and_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = make_backup(tmp_path)
    lab = FakeLab(monkeypatch, None, 0)
    monkeypatch.setattr(backup.stack, "print_ready", lambda lab: None)
    backup.restore(settings.load(), archive, yes=True)
    [safety] = (settings.load().state_dir / backup.SAFETY_DIR).iterdir()
    assert str(safety) in capsys.readouterr().out
    actions = [action for action, _ in lab.calls]
    assert actions == ["stage"] * 3 + ["swap"] * 3 + ["finish"] * 3
