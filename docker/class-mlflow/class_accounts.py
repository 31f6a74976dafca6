"""The class's MLflow accounts, run by the host tools with `docker exec` in the server's
container (the server's port is not published): one user and one workspace per student.

    python3 class_accounts.py add USER        (password on stdin; an existing one is reset)
    python3 class_accounts.py password USER   (new password on stdin)
    python3 class_accounts.py remove USER [--delete-data]
    python3 class_accounts.py list

Each student gets the role `student` in the workspace named like them, with exactly what
the lab needs: use the workspace, manage its experiments and registered models. With
`default_permission = NO_PERMISSIONS` (class_serve.py) nothing else is theirs. The
instructor is MLflow's admin and sees every workspace. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import class_serve

ROLE = "student"
GRANTS = (
    ("workspace", "*", "USE"),
    ("experiment", "*", "MANAGE"),
    ("registered_model", "*", "MANAGE"),
)
SERVER = f"http://127.0.0.1:{class_serve.PORT}"


def _clients() -> tuple[Any, Any]:
    os.environ["MLFLOW_TRACKING_URI"] = SERVER
    os.environ["MLFLOW_TRACKING_USERNAME"] = os.environ.get("LAB_CLASS_INSTRUCTOR", "instructor")
    os.environ["MLFLOW_TRACKING_PASSWORD"] = class_serve.secret("instructor-password")
    from mlflow.server.auth.client import AuthServiceClient
    from mlflow.tracking import MlflowClient

    return AuthServiceClient(SERVER), MlflowClient(SERVER)


def _already(exc: Exception) -> bool:
    return "RESOURCE_ALREADY_EXISTS" in str(exc) or "already exists" in str(exc)


def _missing(exc: Exception) -> bool:
    return "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower()


def add(user: str, password: str) -> dict[str, Any]:
    auth, tracking = _clients()
    try:
        auth.create_user(user, password)
    except Exception as exc:
        if not _already(exc):
            raise
        auth.update_user_password(user, password)
    try:
        tracking.create_workspace(name=user, description=f"{user}'s work")
    except Exception as exc:
        if not _already(exc):
            raise
    role = next((r for r in auth.list_roles(user) if r.name == ROLE), None)
    if role is None:
        role = auth.create_role(user, ROLE, description="a student of the class")
        for resource_type, pattern, permission in GRANTS:
            auth.add_role_permission(role.id, resource_type, pattern, permission)
    if all(r.id != role.id for r in auth.list_user_roles(user)):
        auth.assign_role(user, role.id)
    return {"user": user, "workspace": user, "role": role.id}


def password(user: str, new: str) -> dict[str, Any]:
    auth, _ = _clients()
    auth.update_user_password(user, new)
    return {"user": user}


def remove(user: str, delete_data: bool) -> dict[str, Any]:
    auth, tracking = _clients()
    try:
        auth.delete_user(user)
    except Exception as exc:
        if not _missing(exc):
            raise
    if delete_data:
        try:
            tracking.delete_workspace(user, mode="CASCADE")
        except Exception as exc:
            if not _missing(exc):
                raise
    return {"user": user, "deleted_data": delete_data}


def list_users() -> dict[str, Any]:
    auth, tracking = _clients()
    from mlflow.server.auth.routes import LIST_USERS

    users = auth._request(LIST_USERS, "GET").get("users", [])
    workspaces = [w.name for w in tracking.list_workspaces()]
    return {"users": [u.get("username") for u in users], "workspaces": workspaces}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=("add", "password", "remove", "list"))
    parser.add_argument("user", nargs="?", default="")
    parser.add_argument("--delete-data", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.action == "add":
            done = add(args.user, sys.stdin.read().strip())
        elif args.action == "password":
            done = password(args.user, sys.stdin.read().strip())
        elif args.action == "remove":
            done = remove(args.user, args.delete_data)
        else:
            done = list_users()
    except Exception as exc:  # one line for the host tool, whatever went wrong
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:500]}))
        return 1
    print(json.dumps(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
