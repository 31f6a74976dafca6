"""`invoke classroom.students ...`: the class's accounts, in the hub and in MLflow at once.

MLflow's account (and workspace) comes first and the hub's roster entry last, so a
student can log in only once both exist; removal goes the other way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow_lab.classroom import remote_volume, roster, stack, swarm
from mlflow_lab.classroom.settings import ClassSettings
from mlflow_lab.core import docker
from mlflow_lab.core.errors import LabError


def _need_running(settings: ClassSettings) -> None:
    if not stack.deployed(settings):
        raise LabError(
            f"the class {settings.stack} is not running: start it with `invoke classroom.up`"
        )


def add(settings: ClassSettings, csv_file: Path) -> list[tuple[str, str, str]]:
    """Create the accounts of a roster CSV; the new ones' (username, name, password)."""
    wanted = roster.parse_csv(csv_file, reserved=(settings.instructor,))
    _need_running(settings)
    accounts = roster.read_accounts(settings)
    passwords = roster.read_passwords(settings)
    made: list[tuple[str, str, str]] = []
    kept = [s.username for s in wanted if s.username in accounts]
    for student in wanted:
        if student.username in accounts:
            continue
        password = roster.new_password()
        stack.accounts(settings, "add", student.username, password=password)
        accounts[student.username] = {
            "password": roster.hash_password(password),
            "name": student.display_name,
            "admin": False,
        }
        passwords[student.username] = (student.display_name, password)
        # Written after each student: an interrupted run loses no password it made.
        roster.write_passwords(settings, passwords)
        roster.write_accounts(settings, accounts)
        made.append((student.username, student.display_name, password))
    if made:
        stack.hub(settings).api("POST", "/users", {"usernames": [m[0] for m in made]}, ok=(409,))
    if kept:
        print(f"Already in the class (kept, passwords unchanged): {', '.join(kept)}")
    return made


def listing(settings: ClassSettings) -> list[dict[str, Any]]:
    return stack.students_report(settings, stack.deployed(settings))


def _known(settings: ClassSettings, user: str) -> dict[str, dict[str, Any]]:
    accounts = roster.read_accounts(settings)
    if user == settings.instructor:
        raise LabError(f"{user} is the instructor (LAB_CLASS_INSTRUCTOR), not a student")
    if user not in accounts:
        raise LabError(f"no student {user!r} in the class: see `invoke classroom.students list`")
    return accounts


def _end_hub_user(settings: ClassSettings, user: str) -> None:
    """Stop the student's server and forget their sessions (their volume stays)."""
    api = stack.hub(settings)
    api.api("DELETE", f"/users/{user}/server", ok=(400, 404))
    api.api("DELETE", f"/users/{user}", ok=(404,))
    _remove_server(settings, user)


def _remove_server(settings: ClassSettings, user: str) -> None:
    """The student's service, which the hub removes as it stops it (unless the hub is down)."""
    service = stack.student_service(settings, user)
    if service:
        swarm.remove_services([service])


def _remote_workspace(settings: ClassSettings, user: str) -> remote_volume.Remote | None:
    """The student's workspace on another machine, which --delete-data empties there; a
    refusal, before anything changes, while that machine cannot be reached."""
    remote = remote_volume.elsewhere(settings, [user]).get(user)
    if remote is not None and remote.unreachable:
        raise LabError(
            f"{user}'s notebooks are on {remote.hostname}, which is {remote.unreachable}: "
            "run this again once it is back (`invoke classroom.nodes` shows it), or remove "
            "them without --delete-data (their notebooks then stay on that machine)"
        )
    return remote


def remove(settings: ClassSettings, user: str, *, delete_data: bool) -> None:
    accounts = _known(settings, user)
    _need_running(settings)
    # Asked before the hub forgets the user: their pin says where the workspace is.
    remote = _remote_workspace(settings, user) if delete_data else None
    accounts.pop(user)
    roster.write_accounts(settings, accounts)
    _end_hub_user(settings, user)
    stack.accounts(settings, "remove", user, *(["--delete-data"] if delete_data else []))
    passwords = roster.read_passwords(settings)
    passwords.pop(user, None)
    roster.write_passwords(settings, passwords)
    if delete_data:
        volumes = swarm.volumes(f"{stack.STUDENT_LABEL}={user}")
        mine = [v for v in volumes if v.startswith(f"{settings.stack}_")]
        if mine:
            docker.run("volume", "rm", *mine, check=False)
        if remote is None:
            print(f"Removed {user} and their data (MLflow workspace, notebooks).")
            return
        try:
            remote_volume.empty(settings, remote)
        except LabError as exc:
            raise LabError(
                f"removed {user}'s accounts and MLflow workspace, but their notebooks on "
                f"{remote.hostname} could not be deleted ({exc}): on {remote.hostname}, "
                f"`docker volume rm {remote.volume}`"
            ) from None
        print(
            f"Removed {user} and their data (MLflow workspace, notebooks); the empty volume "
            f"{remote.volume} stays on {remote.hostname} (Docker removes no volume of another "
            f"machine: `docker volume rm {remote.volume}` there removes it)."
        )
    else:
        print(
            f"Removed {user}'s accounts; their notebooks and runs are kept "
            "(--delete-data deletes them)."
        )


def reset_password(settings: ClassSettings, user: str) -> tuple[str, str, str]:
    accounts = _known(settings, user)
    _need_running(settings)
    password = roster.new_password()
    stack.accounts(settings, "password", user, password=password)
    accounts[user]["password"] = roster.hash_password(password)
    roster.write_accounts(settings, accounts)
    passwords = roster.read_passwords(settings)
    name = str(accounts[user].get("name", ""))
    passwords[user] = (name, password)
    roster.write_passwords(settings, passwords)
    # Their server carries the old MLflow password: it stops, and they log in again. The
    # hub's user stays, with where their workspace is.
    stack.hub(settings).end_sessions(user)
    _remove_server(settings, user)
    return user, name, password
