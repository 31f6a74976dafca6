"""Workspaces on the class's other machines, without Docker: which students' workspaces are
elsewhere (the hub's pins), the one-off service that reads one and is removed however it
ends, what the backup records when a machine is down, and the refusal of a
`--delete-data` there. The two scripts that move the tar run here for real, on loopback."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from mlflow_lab.classroom import backup, remote_volume, roster, stack, students
from mlflow_lab.classroom.remote_volume import Remote
from mlflow_lab.classroom.settings import ClassSettings
from mlflow_lab.core.errors import LabError
from tests.helpers import FakeDocker, free_port
from tests.unit.classroom.test_machines import MANAGER_ID, WORKER_ID, node, teacher_and_pc7

IMAGE = "sha256:" + "ab" * 32
PC7 = Remote("alice", "room_workspace-alice", "pc-7", WORKER_ID, "ready")


class PinningHub:
    """The hub's API as the instructor's token sees it: each user's stopped server with
    its spawner state."""

    def __init__(self, pins: dict[str, dict[str, str] | None]) -> None:
        self.pins, self.asked = pins, []

    def api(self, method: str, path: str, ok: tuple[int, ...] = ()) -> Any:
        self.asked.append(path)
        user = path.removeprefix("/users/").partition("?")[0]
        if user not in self.pins:
            return None  # 404: no such hub user
        pin = self.pins[user]
        state = {"object_id": "x", **({"class_node": pin} if pin else {})}
        return {"name": user, "servers": {"": {"stopped": True, "state": state}}}


def test_the_volume_name_is_dockerspawners_escaped_username(settings: ClassSettings) -> None:
    assert remote_volume.workspace_volume(settings, "alice") == "room_workspace-alice"
    assert remote_volume.workspace_volume(settings, "probe-1a") == "room_workspace-probe-2d1a"


def test_a_class_on_one_machine_asks_the_hub_nothing(
    fake_docker: FakeDocker, settings: ClassSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_docker.on(r"^docker node ls", node(MANAGER_ID, "teacher", "Leader", "Ready", True))
    monkeypatch.setattr(stack, "hub", lambda _: pytest.fail("the hub was asked"))
    assert remote_volume.elsewhere(settings, ["alice"]) == {}


def test_the_hubs_pins_say_whose_workspace_is_on_which_other_machine(
    fake_docker: FakeDocker, settings: ClassSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    teacher_and_pc7(fake_docker, "Down")
    hub = PinningHub(
        {
            "alice": {"node_id": WORKER_ID, "hostname": "pc-7"},
            "bob": {"node_id": MANAGER_ID, "hostname": "teacher"},
            "carol": None,  # never started: no pin
            "dave": {"node_id": "old-id", "hostname": "pc-7"},  # pc-7 joined again
            "eve": {"node_id": "gone", "hostname": "pc-9"},  # a machine that left
        }
    )
    monkeypatch.setattr(stack, "hub", lambda _: hub)
    found = remote_volume.elsewhere(settings, ["alice", "bob", "carol", "dave", "eve", "zed"])
    assert found == {
        "alice": Remote("alice", "room_workspace-alice", "pc-7", WORKER_ID, "down"),
        "dave": Remote("dave", "room_workspace-dave", "pc-7", WORKER_ID, "down"),
        "eve": Remote("eve", "room_workspace-eve", "pc-9", "", "", ""),
    }
    assert found["alice"].unreachable == "down"
    assert found["eve"].unreachable == "no longer in the class's swarm"
    drained = Remote("dave", "v", "pc-7", WORKER_ID, "ready", "drain")
    assert drained.unreachable == "set to drain, so Swarm starts nothing there"
    assert PC7.unreachable == ""
    assert hub.asked[0] == "/users/alice?include_stopped_servers"


def hub_spawns(fake_docker: FakeDocker) -> None:
    """The deployed hub's environment: the student image by ID."""
    fake_docker.on(
        r"^docker service inspect --format .*room_hub$",
        json.dumps([f"LAB_CLASS_NOTEBOOK_IMAGE={IMAGE}"]),
    )


def task_ends(fake_docker: FakeDocker, state: str, error: str = "") -> None:
    line = json.dumps({"CurrentState": f"{state} 1 second ago", "Error": error})
    fake_docker.on(r"^docker service ps --no-trunc --format \{\{json \.\}\} room-oneoff-", line)


def test_a_remote_volume_is_read_by_a_service_there_and_a_container_here(
    fake_docker: FakeDocker, settings: ClassSettings, tmp_path: Path
) -> None:
    hub_spawns(fake_docker)
    fake_docker.on(r"^docker service create ")
    fake_docker.on(r"^docker run --rm --name room-oneoff-\w+-reader ", stdout="the tar")
    fake_docker.on(r"^docker rm --force ")
    fake_docker.on(r"^docker service rm ")
    task_ends(fake_docker, "Complete")
    out = tmp_path / "alice.tar"
    remote_volume.read(settings, PC7, out)
    assert out.read_bytes() == b"the tar"
    create = fake_docker.matching(r"^docker service create ")[0]
    args = create.argv
    for option, value in [
        ("--constraint", f"node.id=={WORKER_ID}"),
        ("--restart-condition", "none"),
        ("--mount", "type=volume,source=room_workspace-alice,target=/v,readonly"),
        ("--network", "room_class"),
        ("--endpoint-mode", "dnsrr"),
        ("--env", remote_volume.TOKEN_ENV),
    ]:
        assert args[args.index(option) + 1] == value, option
    assert IMAGE in args
    # The token travels in the environment, the same to both ends, never in an argv.
    token = create.env[remote_volume.TOKEN_ENV] if create.env else ""
    reader = fake_docker.matching(r"^docker run --rm ")[0]
    assert len(token) == 32 and reader.env == create.env
    assert not any(token in line for line in fake_docker.lines)
    assert fake_docker.matching(r"^docker service rm room-oneoff-\w+$")


@pytest.mark.parametrize("failure", ["task", "stream", "interrupt"])
def test_a_failed_or_interrupted_read_leaves_no_service_container_or_part(
    fake_docker: FakeDocker, settings: ClassSettings, tmp_path: Path, failure: str
) -> None:
    hub_spawns(fake_docker)
    fake_docker.on(r"^docker service create ")
    fake_docker.on(r"^docker rm --force ")
    fake_docker.on(r"^docker service rm ")
    reader = r"^docker run --rm --name room-oneoff-"
    if failure == "interrupt":
        fake_docker.on(reader, KeyboardInterrupt())  # type: ignore[arg-type]
    elif failure == "stream":
        fake_docker.on(reader, stdout="half", stderr="its machine stopped sending", code=1)
    else:
        fake_docker.on(reader, stdout="half")
    task_ends(fake_docker, "Failed", "task: non-zero exit (2)")
    out = tmp_path / "alice.tar"
    with pytest.raises(KeyboardInterrupt if failure == "interrupt" else LabError) as raised:
        remote_volume.read(settings, PC7, out)
    if failure == "task":
        assert str(raised.value) == "reading it there failed: task: non-zero exit (2)"
    if failure == "stream":
        assert str(raised.value) == "its machine stopped sending"
    assert not out.exists()
    assert fake_docker.matching(r"^docker rm --force room-oneoff-\w+-reader$")
    assert fake_docker.matching(r"^docker service rm room-oneoff-\w+$")


def test_a_backup_reads_workspaces_elsewhere_and_records_a_machine_that_is_down(
    settings: ClassSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    roster.write_accounts(settings, {n: {"password": "h"} for n in ("instructor", "alice",
                                                                   "bob", "carol")})  # fmt: skip
    monkeypatch.setattr(backup, "_db_container", lambda _: "db")
    read_here: list[str] = []

    def stream(argv: list[str], what: str, *, out: Path | None = None, **_: Any) -> None:
        read_here.append(what)
        assert out is not None
        out.write_bytes(b"here")

    monkeypatch.setattr(backup, "_stream", stream)
    # Alice was on this machine once (a stale volume); her server now runs on pc-7.
    monkeypatch.setattr(backup, "workspaces", lambda _: {"alice": "room_workspace-alice",
                                                         "bob": "room_workspace-bob"})  # fmt: skip
    carol = Remote("carol", "room_workspace-carol", "pc-8", "w8", "down")
    asked: list[list[str]] = []

    def elsewhere(_: ClassSettings, users: list[str]) -> dict[str, Remote]:
        asked.append(users)
        return {"alice": PC7, "carol": carol}

    monkeypatch.setattr(remote_volume, "elsewhere", elsewhere)
    monkeypatch.setattr(remote_volume, "read", lambda _, r, out: out.write_bytes(b"from pc-7"))
    parts, missed = backup._dump_parts(settings, tmp_path)
    assert asked == [["alice", "bob", "carol"]], "the students, not the instructor"
    assert "reading room_workspace-alice" not in read_here
    assert (tmp_path / "workspace-alice.tar").read_bytes() == b"from pc-7"
    assert parts["workspace-alice.tar"]["machine"] == "pc-7"
    assert parts["workspace-alice.tar"]["volume"] == "room_workspace-alice"
    assert "workspace-bob.tar" in parts and "workspace-carol.tar" not in parts
    assert missed == {"carol": {"machine": "pc-8", "why": "it is down"}}
    line = backup.not_included_line({"not_included": missed})
    assert line == (
        "warning: the workspaces of carol on pc-8 (it is down) could not be read and are "
        "not in this backup (they are kept on their machine): back up again once it is back "
        "(`invoke classroom.nodes`)"
    )


def test_the_warning_groups_the_students_by_machine_in_one_line() -> None:
    missed = {
        "alice": {"machine": "pc-7", "why": "it is down"},
        "dave": {"machine": "pc-7", "why": "it is down"},
        "eve": {"machine": "pc-9", "why": "it is no longer in the class's swarm"},
    }
    line = backup.not_included_line({"not_included": missed}, restoring=True)
    assert line == (
        "warning: this backup has no workspace of alice, dave on pc-7 (it is down); eve on "
        "pc-9 (it is no longer in the class's swarm): a restore leaves those workspaces on "
        "their machines as they are"
    )
    assert backup.not_included_line({"not_included": {}}) == ""
    assert backup.not_included_line({}) == "", "a backup from before the field"


def test_deleting_the_data_of_a_student_whose_machine_is_down_changes_nothing(
    settings: ClassSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    roster.write_accounts(settings, {"alice": {"password": "h"}})
    monkeypatch.setattr(stack, "deployed", lambda _: True)
    down = Remote("alice", "room_workspace-alice", "pc-7", WORKER_ID, "down")
    monkeypatch.setattr(remote_volume, "elsewhere", lambda _, users: {"alice": down})
    with pytest.raises(LabError) as refused:
        students.remove(settings, "alice", delete_data=True)
    assert str(refused.value) == (
        "alice's notebooks are on pc-7, which is down: run this again once it is back (`invoke "
        "classroom.nodes` shows it), or remove them without --delete-data (their notebooks "
        "then stay on that machine)"
    )
    assert "alice" in roster.read_accounts(settings)


def test_emptying_a_remote_volume_waits_for_its_task_and_removes_the_service(
    fake_docker: FakeDocker, settings: ClassSettings
) -> None:
    hub_spawns(fake_docker)
    fake_docker.on(r"^docker service create ")
    fake_docker.on(r"^docker service rm ")
    task_ends(fake_docker, "Complete")
    remote_volume.empty(settings, PC7)
    args = fake_docker.matching(r"^docker service create ")[0].argv
    assert args[args.index("--mount") + 1] == "type=volume,source=room_workspace-alice,target=/v"
    assert "--network" not in args
    assert args[-2:] == ["-c", remote_volume.EMPTY]
    task_ends(fake_docker, "Failed", "task: non-zero exit (1)")
    with pytest.raises(LabError, match=r"^emptying it there failed: task: non-zero exit \(1\)$"):
        remote_volume.empty(settings, PC7)
    assert len(fake_docker.matching(r"^docker service rm ")) == 2


def on_loopback(script: str, volume: Path, port: int) -> str:
    """A script as it runs in its container, with /v and the port of this test."""
    return script.replace('"/v"', repr(str(volume))).replace(str(remote_volume.PORT), str(port))


def test_the_server_gives_the_tar_only_to_the_client_with_the_token(tmp_path: Path) -> None:
    volume = tmp_path / "v"
    (volume / "sub").mkdir(parents=True)
    (volume / "sub" / "saved.ipynb").write_bytes(b'{"cells": []}')
    port = free_port()
    env = {**os.environ, remote_volume.TOKEN_ENV: "s3cret"}
    serve = on_loopback(remote_volume.SERVE, volume, port)
    server = subprocess.Popen([sys.executable, "-c", serve], env=env)
    try:
        read = on_loopback(remote_volume.READ, volume, port)
        intruder = subprocess.run(
            [sys.executable, "-c", read, "127.0.0.1"], capture_output=True, timeout=60,
            env={**env, remote_volume.TOKEN_ENV: "guess"},
        )  # fmt: skip
        assert intruder.stdout == b"", "a wrong token gets nothing"
        client = subprocess.run(
            [sys.executable, "-c", read, "127.0.0.1"], capture_output=True, timeout=60, env=env
        )
        assert client.returncode == 0, client.stderr
        assert server.wait(timeout=30) == 0, "tar read it all"
    finally:
        server.kill()
        server.wait()
    with tarfile.open(fileobj=io.BytesIO(client.stdout)) as tar:
        saved = tar.extractfile("./sub/saved.ipynb")
        assert saved is not None and saved.read() == b'{"cells": []}'


def test_the_client_gives_up_when_nothing_serves(tmp_path: Path) -> None:
    read = on_loopback(remote_volume.READ, tmp_path, free_port()).replace(
        f"+ {remote_volume.START_S}", "+ 1"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", read, "127.0.0.1"], capture_output=True, timeout=60,
        env={**os.environ, remote_volume.TOKEN_ENV: "t"},
    )  # fmt: skip
    assert done.returncode == 1 and b"did not serve it within" in done.stderr
    assert time.monotonic() - started < 30


def test_down_removes_a_one_off_service_its_command_left(
    fake_docker: FakeDocker, settings: ClassSettings
) -> None:
    """A backup killed hard (SIGKILL) cannot remove its one-off service itself."""
    services = r"^docker service ls --filter label="
    fake_docker.on(services + f"{stack.CLASS_LABEL}=room ", '{"Name": "room-student-bob"}\n')
    fake_docker.on(services + f"{stack.ONEOFF_LABEL}=room ", '{"Name": "room-oneoff-1a2b"}\n')
    fake_docker.on(services + "com.docker.stack.namespace=room ", "")
    fake_docker.on(r"^docker service rm ")
    stack.down(settings)
    assert fake_docker.matching(r"^docker service rm room-student-bob room-oneoff-1a2b$")
