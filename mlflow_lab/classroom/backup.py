"""`invoke classroom.backup --output FILE` / `classroom.restore FILE --yes`.

A class backup is one tar.gz: `manifest.json` (format, time, stack, students, the sha256
and size of each part) and the parts:

- `db-mlflow.sql`, `db-mlflow_auth.sql`: MLflow's runs and its accounts, `pg_dump` in the
  db service's container (plain SQL with DROP ... IF EXISTS, so psql restores it whole);
- `artifacts.tar`: the artifact store's volume;
- `workspace-USER.tar`: each student's workspace volume (notebooks), also those on the
  class's other machines (remote_volume.py reads them there); the manifest's
  `not_included` names the students whose machine could not be read (down, gone), and why;
- `roster.json`: the hub's accounts (hashes only; without them nobody could log in).

Not in it: the hub's database (`hub-data`): the hub makes each user again at their next
login from the roster, with a fresh auth_state (MLflow password) that the class's own
hub-crypt-key encrypts; only browser sessions and students' own API tokens are lost. The
students' passwords are the backup's (roster and MLflow accounts travel together); the
instructor's stays this class's secret (class_serve.py gives it to MLflow's admin).

Volumes are read and written by one-off containers of the class's db image (tar is in
it), so the host needs no access to Docker's volumes. The database parts come first: a
run is written after its artifacts, so the artifact snapshot never misses a file the
database snapshot names.

The backup file is written beside its target and renamed into place at the end: it
exists whole or not at all. A restore checks the whole file first (format, every part's
sha256), takes a safety backup of the class as it is (LAB_CLASS_STATE_DIR/backups/), and
only then stops MLflow and the student servers and writes the parts; when anything fails
part-way the safety backup is written back, so it never leaves less than it found.
Student workspaces that the backup does not have are kept as they are.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from mlflow_lab.classroom import remote_volume, roster, stack, swarm
from mlflow_lab.classroom.hub import Hub, HubError
from mlflow_lab.classroom.settings import ClassSettings
from mlflow_lab.core import docker
from mlflow_lab.core.errors import LabError

FORMAT = "mlflow-lab-class-backup"
VERSION = 1
MANIFEST = "manifest.json"
DATABASES = ("mlflow", "mlflow_auth")
ROSTER = "roster.json"
SAFETY_DIR = "backups"
TIMEOUT_S = 1800.0
CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while block := source.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _db_container(settings: ClassSettings) -> str:
    container = swarm.container_of(stack.service_name(settings, "db"))
    if container is None:
        raise LabError("the class's db is not running: start the class with `classroom.up`")
    return container


def artifacts_volume(settings: ClassSettings) -> str:
    return f"{settings.stack}_mlflow-artifacts"


def workspaces(settings: ClassSettings) -> dict[str, str]:
    """Student username to their workspace volume, by the volumes' labels: the names are
    dockerspawner's escaped usernames (docker/hub/jupyterhub_config.py)."""
    result = docker.answers(
        "volume", "ls", "--filter", f"label={stack.CLASS_LABEL}={settings.stack}",
        "--format", f'{{{{.Name}}}}\t{{{{.Label "{stack.STUDENT_LABEL}"}}}}',
    )  # fmt: skip
    found: dict[str, str] = {}
    for line in result.lines() if result else []:
        volume, _, user = line.partition("\t")
        if user and volume.startswith(stack.workspace_prefix(settings.stack)):
            found[user.strip()] = volume
    return found


def _volume_tar(settings: ClassSettings, volume: str, mode: str) -> list[str]:
    """argv of a one-off container that writes the volume as a tar to stdout ("read"), or
    empties it and unpacks a tar from stdin ("write")."""
    if mode == "read":
        script = "tar -C /v --numeric-owner -cf - ."
    else:
        script = "find /v -mindepth 1 -delete && tar -C /v --numeric-owner -xpf -"
    return [
        "run", "--rm", "-i", "--user", "root", "--network", "none", "--entrypoint", "sh",
        "-v", f"{volume}:/v{':ro' if mode == 'read' else ''}", settings.image("db"),
        "-c", script,
    ]  # fmt: skip


def _stream(
    argv: list[str], what: str, *, stdin: Path | None = None, out: Path | None = None
) -> None:
    with (
        open(stdin, "rb") if stdin else open(os.devnull, "rb") as source,
        open(out, "wb") if out else open(os.devnull, "wb") as target,
    ):
        result = docker.stream(
            docker.docker_argv(*argv), stdin=source, stdout=target, timeout=TIMEOUT_S,
            check=False,
        )  # fmt: skip
    if not result.ok:
        raise LabError(f"{what} failed: {result.last_line()}: see `invoke classroom.logs db`")


# -- backup --------------------------------------------------------------------------------


def _dump_parts(
    settings: ClassSettings, into: Path
) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """Every part as a file in `into`: (part name to what it holds, the students whose
    workspace could not be read to where it is and why)."""
    parts: dict[str, dict[str, str]] = {}
    accounts = {
        name: entry
        for name, entry in roster.read_accounts(settings).items()
        if not entry.get("probe")  # classroom.verify's throwaway students
    }
    db = _db_container(settings)
    for name in DATABASES:
        part = f"db-{name}.sql"
        argv = [
            "exec", "--user", "postgres", db, "pg_dump", "-U", "mlflow", "--clean",
            "--if-exists", "--no-owner", "--dbname", name,
        ]  # fmt: skip
        _stream(argv, f"pg_dump of the database {name}", out=into / part)
        parts[part] = {"what": f"database {name}"}
    volume = artifacts_volume(settings)
    _stream(_volume_tar(settings, volume, "read"), f"reading {volume}", out=into / "artifacts.tar")
    parts["artifacts.tar"] = {"what": "the artifact store", "volume": volume}
    elsewhere = remote_volume.elsewhere(
        settings, sorted(n for n in accounts if n != settings.instructor)
    )
    for user, volume in sorted(workspaces(settings).items()):
        if user in elsewhere:
            continue  # their server uses the one on their machine
        part = f"workspace-{user}.tar"
        _stream(_volume_tar(settings, volume, "read"), f"reading {volume}", out=into / part)
        parts[part] = {"what": f"{user}'s workspace", "volume": volume, "student": user}
    missed: dict[str, dict[str, str]] = {}
    for user, remote in sorted(elsewhere.items()):
        part = f"workspace-{user}.tar"
        why = f"it is {remote.unreachable}" if remote.unreachable else ""
        if not why:
            try:
                remote_volume.read(settings, remote, into / part)
            except LabError as exc:
                why = str(exc)
        if why:
            missed[user] = {"machine": remote.hostname, "why": why}
            continue
        parts[part] = {
            "what": f"{user}'s workspace",
            "volume": remote.volume,
            "student": user,
            "machine": remote.hostname,
        }
    (into / ROSTER).write_text(json.dumps({"users": accounts}, indent=1, sort_keys=True) + "\n")
    parts[ROSTER] = {"what": "the hub's accounts"}
    return parts, missed


def not_included_line(manifest: dict[str, Any], *, restoring: bool = False) -> str:
    """One line naming the students whose workspace the backup lacks, by machine; "" when
    it has them all."""
    missed: dict[str, dict[str, str]] = manifest.get("not_included") or {}
    by_machine: dict[str, list[str]] = {}
    for user, about in sorted(missed.items()):
        by_machine.setdefault(str(about.get("machine", "")), []).append(user)
    if not by_machine:
        return ""
    where = "; ".join(
        f"{', '.join(users)} on {machine} ({missed[users[0]].get('why', '')})"
        for machine, users in by_machine.items()
    )
    if restoring:
        return (
            f"warning: this backup has no workspace of {where}: a restore leaves those "
            "workspaces on their machines as they are"
        )
    return (
        f"warning: the workspaces of {where} could not be read and are not in this backup "
        "(they are kept on their machine): back up again once it is back (`invoke "
        "classroom.nodes`)"
    )


def backup(settings: ClassSettings, output: Path) -> dict[str, Any]:
    """Write the class's backup to `output` (whole or not at all); its manifest."""
    if not stack.deployed(settings):
        raise LabError(
            f"the class {settings.stack} is not running: start it with `invoke classroom.up`"
        )
    output = output.expanduser().resolve()
    if not output.parent.is_dir():
        raise LabError(f"the folder {output.parent} does not exist: create it or pick another")
    partial = output.with_name(f".{output.name}.partial")
    try:
        with tempfile.TemporaryDirectory(dir=settings.state_dir, prefix=".backup-") as tmp:
            parts_dir = Path(tmp)
            parts, missed = _dump_parts(settings, parts_dir)
            manifest = {
                "format": FORMAT,
                "version": VERSION,
                "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "stack": settings.stack,
                "students": sorted(
                    n
                    for n in json.loads((parts_dir / ROSTER).read_text())["users"]
                    if n != settings.instructor
                ),
                "parts": {
                    name: {
                        **about,
                        "sha256": _sha256(parts_dir / name),
                        "bytes": (parts_dir / name).stat().st_size,
                    }
                    for name, about in parts.items()
                },
                # Workspaces on machines that could not be read (down, gone): kept there.
                "not_included": missed,
            }
            (parts_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
                for name in (MANIFEST, *parts):
                    tar.add(parts_dir / name, arcname=name)
                raw.flush()
                os.fsync(raw.fileno())
        partial.replace(output)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise LabError(
            f"cannot write the backup {output}: {exc.strerror or exc}: free space or pick "
            "another --output"
        ) from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return manifest


# -- restore -------------------------------------------------------------------------------


@contextmanager
def checked(settings: ClassSettings, archive: Path) -> Iterator[tuple[dict[str, Any], Path]]:
    """The backup unpacked into the state dir with every part's sha256 checked."""
    fix = "nothing was changed; use a backup written by `invoke classroom.backup`"
    with tempfile.TemporaryDirectory(dir=settings.state_dir, prefix=".restore-") as tmp:
        into = Path(tmp)
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(into, filter="data")
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise LabError(f"{archive} is not a readable class backup ({exc}): {fix}") from None
        try:
            manifest: dict[str, Any] = json.loads((into / MANIFEST).read_text())
        except (OSError, ValueError):
            raise LabError(f"{archive} has no readable {MANIFEST}: {fix}") from None
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise LabError(
                f"{archive} is not a class backup of this version ({manifest.get('format')} "
                f"{manifest.get('version')}): {fix}"
            )
        parts = manifest.get("parts") or {}
        for name in (*(f"db-{d}.sql" for d in DATABASES), "artifacts.tar", ROSTER):
            if name not in parts:
                raise LabError(f"{archive} lacks the part {name}: {fix}")
        for name, info in parts.items():
            path = into / name
            if Path(name).name != name or not path.is_file() or _sha256(path) != info["sha256"]:
                raise LabError(
                    f"{archive} is damaged: the part {name} does not match its sha256 in "
                    f"{MANIFEST}: copy the file again from the original; nothing was changed"
                )
        for info in parts.values():
            if info.get("student"):
                target_volume(settings, manifest, str(info.get("volume", "")))
        yield manifest, into


def _stop_for_restore(settings: ClassSettings, manifest: dict[str, Any]) -> None:
    """No writer while the parts are written: the students' servers and MLflow stop.

    A student whose workspace the backup has is forgotten by the hub: the workspace is
    written on this machine, and the hub pins a student with no pin to the machine their
    workspace is on. The others keep their hub user, whose pin says where their workspace
    stays (another machine, when that one was down at the backup). Every session ends: a
    session kept the MLflow password of its login, which the backup's accounts may no
    longer have; the next login brings the restored one."""
    written = {str(p["student"]) for p in manifest["parts"].values() if p.get("student")}
    api = stack.hub(settings)
    users = [u["name"] for u in api.users() if u["name"] != settings.instructor]
    for name in users:
        api.end_sessions(name)
    servers = stack.student_services(settings)
    swarm.remove_services(servers)
    deadline = time.monotonic() + 120
    while any(swarm.container_of(s) for s in servers) and time.monotonic() < deadline:
        time.sleep(1)  # a removed service's container stops a moment later
    for name in users:
        if name in written:
            _forget_hub_user(api, name, deadline)
    _scale(settings, "mlflow", 0)


def _forget_hub_user(api: Hub, name: str, deadline: float) -> None:
    """Delete the hub's user (sessions, tokens, auth_state); the roster keeps the account
    and the hub makes the user again at their next login."""
    while True:
        try:
            api.api("DELETE", f"/users/{name}", ok=(404,))
            return
        except HubError as exc:
            # 400 while the hub still stops their server.
            if exc.status != 400 or time.monotonic() > deadline:
                raise
        time.sleep(1)


def _scale(settings: ClassSettings, service: str, replicas: int) -> None:
    name = stack.service_name(settings, service)
    docker.run("service", "scale", "--detach", f"{name}={replicas}", timeout=60)
    deadline = time.monotonic() + 120
    while replicas == 0 and swarm.container_of(name) and time.monotonic() < deadline:
        time.sleep(1)


def _write_parts(settings: ClassSettings, manifest: dict[str, Any], parts_dir: Path) -> None:
    db = _db_container(settings)
    for name in DATABASES:
        argv = [
            "exec", "-i", "--user", "postgres", db, "psql", "-q", "-U", "mlflow",
            "-v", "ON_ERROR_STOP=1", "--single-transaction", "--dbname", name,
        ]  # fmt: skip
        _stream(argv, f"psql into the database {name}", stdin=parts_dir / f"db-{name}.sql")
    volume = artifacts_volume(settings)
    _stream(
        _volume_tar(settings, volume, "write"), f"writing {volume}",
        stdin=parts_dir / "artifacts.tar",
    )  # fmt: skip
    for name, info in manifest["parts"].items():
        user, saved_volume = info.get("student"), str(info.get("volume", ""))
        if not user:
            continue
        volume = target_volume(settings, manifest, saved_volume)
        docker.run(
            "volume", "create", "--label", f"{stack.CLASS_LABEL}={settings.stack}",
            "--label", f"{stack.STUDENT_LABEL}={user}", volume,
        )  # fmt: skip
        _stream(_volume_tar(settings, volume, "write"), f"writing {volume}", stdin=parts_dir / name)
    saved = json.loads((parts_dir / ROSTER).read_text())["users"]
    current = roster.read_accounts(settings)
    # The instructor's entry follows this class's secret, whatever the backup had.
    if settings.instructor in current:
        saved[settings.instructor] = current[settings.instructor]
    roster.write_accounts(settings, saved)


def target_volume(settings: ClassSettings, manifest: dict[str, Any], saved: str) -> str:
    """This class's volume for a workspace volume the backup names: same student part,
    this class's stack prefix (a backup may come from a class under another name), and
    never any other volume, whatever the manifest says."""
    prefix = stack.workspace_prefix(str(manifest.get("stack", "")))
    suffix = saved[len(prefix) :] if saved.startswith(prefix) else ""
    if not re.fullmatch(r"[a-z0-9-]{1,100}", suffix):
        raise LabError(
            f"the backup names the workspace volume {saved!r}, not one of its class's: use a "
            "backup written by `invoke classroom.backup`; nothing was changed"
        )
    return stack.workspace_prefix(settings.stack) + suffix


def _start_again(settings: ClassSettings) -> None:
    _scale(settings, "mlflow", 1)
    stack.wait_ready(settings)


def safety_path(settings: ClassSettings) -> Path:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return settings.state_dir / SAFETY_DIR / f"safety-{stamp}.tar.gz"


def restore(settings: ClassSettings, archive: Path, *, yes: bool) -> Path:
    """Put the backup's data in place of the class's; the safety backup's path."""
    if not archive.is_file():
        raise LabError(f"no backup file {archive}: check the path")
    if not stack.deployed(settings):
        raise LabError(
            f"the class {settings.stack} is not running: start it with `invoke classroom.up`, "
            "then restore"
        )
    with checked(settings, archive) as (manifest, parts_dir):
        if not yes:
            raise LabError(
                f"restore replaces the class's runs, accounts and the notebooks of "
                f"{len(manifest.get('students', []))} students in the backup: run it again "
                "with --yes if that is what you want"
            )
        missing = not_included_line(manifest, restoring=True)
        if missing:
            print(missing)
        safety = safety_path(settings)
        safety.parent.mkdir(mode=0o700, exist_ok=True)
        backup(settings, safety)
        print(f"Safety backup of the class as it was: {safety}")
        _stop_for_restore(settings, manifest)
        try:
            _write_parts(settings, manifest, parts_dir)
        except BaseException as exc:
            _put_back(settings, safety, exc)
        _start_again(settings)
    return safety


def _put_back(settings: ClassSettings, safety: Path, exc: BaseException) -> NoReturn:
    """The safety backup written back after a failed restore, then the class restarted."""
    reason = str(exc) or type(exc).__name__
    try:
        with checked(settings, safety) as (manifest, parts_dir):
            _write_parts(settings, manifest, parts_dir)
        _start_again(settings)
    except LabError as again:
        raise LabError(
            f"the restore failed ({reason}) and putting back the safety backup {safety} "
            f"failed too ({again}): run `invoke classroom.restore {safety} --yes`"
        ) from None
    raise LabError(
        f"the restore failed ({reason}); the class's data from before is back (from "
        f"{safety}): fix the cause, then run the restore again"
    ) from None
