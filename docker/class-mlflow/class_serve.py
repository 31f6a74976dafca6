"""Start the class's MLflow server: authentication app, workspaces, PostgreSQL, artifacts.

Runs as the container's command. Passwords come from the stack's secrets (files under
/run/secrets), never from the environment a `docker inspect` would show.

The accounts start from nothing: every permission not granted is refused
(`default_permission = NO_PERMISSIONS`), the `default` workspace is nobody's
(`grant_default_workspace_access = false`), and each student gets a role in a
workspace of their own (class_accounts.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

SECRETS = Path(os.environ.get("LAB_CLASS_SECRETS", "/run/secrets"))
PORT = 8080
ARTIFACTS = "/data/artifacts"
AUTH_CONFIG = Path("/tmp/basic_auth.ini")


def secret(name: str) -> str:
    return (SECRETS / name).read_text(encoding="utf-8").strip()


def database_uri(database: str) -> str:
    password = quote(secret("db-password"), safe="")
    host = os.environ.get("LAB_CLASS_DB_HOST", "db")
    return f"postgresql+psycopg2://mlflow:{password}@{host}:5432/{database}"


# MLflow checks a login's password hash (scrypt) on every request unless its credential
# cache is on: measured in this image, 0.11 s of CPU per call, which made a 20-student
# class's tracking calls wait seconds on 2 cores. A success is kept this long per worker
# process (HMAC'd key, no password stored); a changed or removed account is dropped at
# once by the worker that changed it and after at most this long by the others.
AUTH_CACHE_TTL_S = 30


def auth_config(admin: str) -> str:
    """MLflow's basic_auth.ini for the class (admin password: MLFLOW_AUTH_ADMIN_PASSWORD)."""
    return (
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        # MLflow reads this file with configparser's interpolation: a quoted character
        # of the password (%XX) must reach it as %%XX.
        f"database_uri = {database_uri('mlflow_auth').replace('%', '%%')}\n"
        f"admin_username = {admin}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
        f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_S}\n"
    )


def allowed_hosts() -> str:
    # Students' notebooks reach the server as 127.0.0.1:8080 (their forward), the hub and
    # the tools as mlflow:8080; anything else is refused by MLflow's Host check.
    return "localhost,localhost:*,127.0.0.1,127.0.0.1:*,mlflow,mlflow:*"


def sync_admin_password(admin: str, password: str) -> bool:
    """Give MLflow's admin this class's instructor password when the accounts database
    has another one; True when it changed.

    MLflow sets the admin's password only when it creates the admin. A restored backup of
    another class brings that class's admin password, and the instructor and the host
    tools (which log in with this class's secret) would be locked out. The secret is the
    one source of the instructor's password, so it wins at every start.
    """
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(database_uri("mlflow_auth"))
    if not store.has_user(admin, use_primary=True):
        return False  # a new class: the server creates its admin with this password
    if store.authenticate_user(admin, password, use_primary=True):
        return False
    store.update_user(admin, password=password, is_admin=True)
    return True


def main() -> None:
    admin = os.environ.get("LAB_CLASS_INSTRUCTOR", "instructor")
    AUTH_CONFIG.write_text(auth_config(admin), encoding="utf-8")
    AUTH_CONFIG.chmod(0o600)
    if sync_admin_password(admin, secret("instructor-password")):
        print(f"MLflow's admin {admin} now has this class's instructor password.", flush=True)
    os.environ.update(
        {
            "MLFLOW_AUTH_CONFIG_PATH": str(AUTH_CONFIG),
            "MLFLOW_AUTH_ADMIN_PASSWORD": secret("instructor-password"),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secret("mlflow-secret-key"),
        }
    )
    store = database_uri("mlflow")
    argv = [
        "mlflow",
        "server",
        "--app-name",
        "basic-auth",
        "--enable-workspaces",
        "--backend-store-uri",
        store,
        "--serve-artifacts",
        "--artifacts-destination",
        ARTIFACTS,
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
        "--workers",
        os.environ.get("LAB_CLASS_MLFLOW_WORKERS", "2"),
        "--allowed-hosts",
        allowed_hosts(),
    ]
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
