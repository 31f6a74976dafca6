"""The class backup's checks that need no Docker: the file is read whole and every part's
sha256 matches before anything changes, and it can name no volume but its class's."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from mlflow_lab.classroom import backup
from mlflow_lab.classroom.hub import Hub, HubError
from mlflow_lab.classroom.settings import ClassSettings
from mlflow_lab.core.errors import LabError

PARTS = {
    "db-mlflow.sql": b"-- runs\n",
    "db-mlflow_auth.sql": b"-- accounts\n",
    "artifacts.tar": b"tar",
    "roster.json": b'{"users": {}}\n',
    "workspace-carol.tar": b"notebooks",
}


def write(path: Path, parts: dict[str, bytes], sums: dict[str, bytes] | None = None) -> Path:
    """A backup of `parts`, its manifest's sha256s taken from `sums` (default: parts)."""
    manifest = {
        "format": backup.FORMAT,
        "version": backup.VERSION,
        "stack": "old-room",
        "parts": {
            name: {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}
            for name, body in (sums or parts).items()
        },
    }
    manifest["parts"]["workspace-carol.tar"].update(  # type: ignore[index]
        student="carol", volume="old-room_workspace-carol"
    )
    with tarfile.open(path, "w:gz") as tar:
        for name, body in {"manifest.json": json.dumps(manifest).encode(), **parts}.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return path


def test_a_whole_backup_is_unpacked_and_its_volumes_are_this_classs(
    settings: ClassSettings, tmp_path: Path
) -> None:
    archive = write(tmp_path / "b.tar.gz", PARTS)
    with backup.checked(settings, archive) as (manifest, into):
        assert (into / "db-mlflow.sql").read_bytes() == PARTS["db-mlflow.sql"]
        saved = manifest["parts"]["workspace-carol.tar"]["volume"]
        assert backup.target_volume(settings, manifest, saved) == "room_workspace-carol"


def test_a_changed_part_is_refused(settings: ClassSettings, tmp_path: Path) -> None:
    damaged = write(tmp_path / "d.tar.gz", {**PARTS, "artifacts.tar": b"tampered"}, PARTS)
    with (
        pytest.raises(LabError, match=r"artifacts\.tar does not match its sha256"),
        backup.checked(settings, damaged),
    ):
        pass


@pytest.mark.parametrize(
    "volume", ["mainlab_workspace", "old-room_workspace-../x", "old-room_workspace-"]
)
def test_no_volume_but_a_class_workspace(
    settings: ClassSettings, tmp_path: Path, volume: str
) -> None:
    manifest = {"stack": "old-room"}
    with pytest.raises(LabError, match="not one of its class's"):
        backup.target_volume(settings, manifest, volume)


def test_a_file_that_is_no_backup_is_one_line(settings: ClassSettings, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tar")
    with (
        pytest.raises(LabError, match="is not a readable class backup"),
        backup.checked(settings, junk),
    ):
        pass


class StoppingHub:
    """The hub's API while it still stops a server: DELETE /users/NAME answers 400 first."""

    def __init__(self, busy: int, status: int = 400) -> None:
        self.busy, self.status, self.calls = busy, status, 0

    def api(self, method: str, path: str, ok: tuple[int, ...] = ()) -> None:
        self.calls += 1
        if self.calls <= self.busy:
            raise HubError(f"hub API {method} {path} answered {self.status}", self.status)


def test_a_restore_forgets_a_hub_user_once_their_server_has_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(backup.time, "sleep", lambda _: None)
    hub = StoppingHub(busy=2)
    backup._forget_hub_user(hub, "carol", deadline=backup.time.monotonic() + 60)  # type: ignore[arg-type]
    assert hub.calls == 3


def test_another_hub_error_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup.time, "sleep", lambda _: None)
    hub = StoppingHub(busy=5, status=500)
    with pytest.raises(HubError, match="500"):
        backup._forget_hub_user(hub, "carol", deadline=backup.time.monotonic() + 60)  # type: ignore[arg-type]
    assert hub.calls == 1


class RecordingHub(Hub):
    """The hub's API as a restore uses it, every call recorded; each user has one token."""

    def __init__(self, names: list[str]) -> None:
        super().__init__("http://hub.invalid", token="t")
        self.names = names
        self.calls: list[tuple[str, str]] = []

    def users(self, page_size: int = 200) -> list[dict[str, Any]]:
        return [{"name": name, "servers": {}} for name in self.names]

    def request(self, method: str, path: str, body: Any = None, **_: Any) -> tuple[int, str, str]:
        api_path = path.removeprefix("/hub/api")
        self.calls.append((method, api_path))
        if method == "GET" and api_path.endswith("/tokens"):
            return 200, path, json.dumps({"api_tokens": [{"id": "a7"}]})
        return 204, path, ""


def test_a_restore_keeps_the_hub_users_whose_workspace_it_does_not_write(
    monkeypatch: pytest.MonkeyPatch, settings: ClassSettings
) -> None:
    """Carol's workspace is in the backup: written on this machine, so the hub forgets her
    (and her pin). Dave's is not (his machine was down at the backup): he keeps his hub user,
    whose pin leads to his workspace. Both their sessions end; the instructor's stay."""
    hub = RecordingHub([settings.instructor, "carol", "dave"])
    monkeypatch.setattr(backup.stack, "hub", lambda _: hub)
    monkeypatch.setattr(backup.stack, "student_services", lambda _: ["c-student-carol"])
    removed: list[list[str]] = []
    monkeypatch.setattr(backup.swarm, "remove_services", removed.append)
    monkeypatch.setattr(backup.swarm, "container_of", lambda _: "")
    monkeypatch.setattr(backup, "_scale", lambda *_: None)
    manifest = {"parts": {"workspace-carol.tar": {"student": "carol"}, "artifacts.tar": {}}}
    backup._stop_for_restore(settings, manifest)
    assert removed == [["c-student-carol"]]
    for name in ("carol", "dave"):
        assert ("DELETE", f"/users/{name}/server") in hub.calls
        assert ("DELETE", f"/users/{name}/tokens/a7") in hub.calls
    assert ("DELETE", "/users/carol") in hub.calls
    assert ("DELETE", "/users/dave") not in hub.calls, "dave's pin is kept"
    assert not [call for call in hub.calls if f"/users/{settings.instructor}" in call[1]]
