"""JupyterHub for the class: logins from the roster, one JupyterLab per student.

Everything the instructor tunes comes from the environment that classroom.yaml fills
from the LAB_CLASS_* settings; secrets come from the stack's secrets (/run/secrets).

- Logins: RosterAuthenticator (roster_auth.py), accounts kept by `invoke classroom.students`.
- Student servers: dockerspawner's SwarmSpawner (class_spawner.py), one Swarm service per
  student from the lab's jupyter image (plus jupyterhub-singleuser), on the class's overlay
  network, on a machine placement.py chooses among those ready for students. This
  engine has no IPVS, so a service gets DNS round-robin endpoints (no virtual IP) and
  the hub reaches it by its service name; nothing of it is published.
- Each student has their own workspace volume, kept when their server stops (idle
  culling, `classroom.down`, `students remove` without --delete-data).
- Student servers never get the Docker socket: only this hub has it, to spawn them.
"""

# ruff: noqa: F821  (`c` and `get_config` are given by JupyterHub when it loads this file)
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import aiohttp.connector
import aiohttp.resolver
from docker.types import Healthcheck, Mount
from mlflow_ui_rules import SERVICE as MLFLOW_UI

# The hub checks a student's server with aiohttp, which resolves with aiodns (c-ares)
# when that is installed, and c-ares keeps answers for their TTL: Docker's DNS gives a
# service's name 600 s, so a server restarted within ten minutes (reset-password, a
# restore, a stop and start) was looked for at its old task's address until the spawn
# timed out. getaddrinfo asks Docker's DNS every time.
aiohttp.resolver.DefaultResolver = aiohttp.resolver.ThreadedResolver
aiohttp.connector.DefaultResolver = aiohttp.resolver.ThreadedResolver  # type: ignore[misc]

c = get_config()  # type: ignore[name-defined]

SECRETS = Path("/run/secrets")
CLASS_DIR = Path("/srv/class")  # the class's state dir on the host, read-only
STACK = os.environ.get("LAB_CLASS_STACK", "mlflow-class")
INSTRUCTOR = os.environ.get("LAB_CLASS_INSTRUCTOR", "instructor")
WORKSPACE = "/home/student/workspace"
MLFLOW_HOSTPORT = "mlflow:8080"  # the class's MLflow on the class network
MLFLOW_URL = f"http://{MLFLOW_HOSTPORT}"


def secret(name: str) -> str:
    return (SECRETS / name).read_text(encoding="utf-8").strip()


# -- the hub and its proxy ---------------------------------------------------------------
c.JupyterHub.hub_bind_url = "http://0.0.0.0:8081"
# Student servers call the hub back by its service name on the class network.
c.JupyterHub.hub_connect_url = "http://hub:8081"
c.JupyterHub.db_url = "sqlite:////srv/jupyterhub/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "/srv/jupyterhub/jupyterhub_cookie_secret"
c.ConfigurableHTTPProxy.command = ["configurable-http-proxy"]
# The hub's readiness check of a restarted server must reach the new server, not the old
# one that lives on for seconds under the same name: a kept-alive connection, or a name
# kept in aiohttp's own cache (10 s), would lead to the old one, and the hub would call the
# new server ready before it listens (the student then gets the hub's 503 page). These
# requests all stay on the class network, where a new connection costs next to nothing.
c.JupyterHubHTTPClient.connector_options = {"force_close": True, "use_dns_cache": False}
# `classroom.down` removes student servers with the stack; a restarted hub finds them
# gone and shows them stopped.
c.JupyterHub.cleanup_servers = False
cert, key = CLASS_DIR / "tls" / "cert.pem", CLASS_DIR / "tls" / "key.pem"
tls = cert.is_file() and key.is_file()
if tls:
    # The proxy serves HTTPS with the instructor's certificate (LAB_CLASS_TLS_CERT/KEY).
    c.JupyterHub.ssl_cert = str(cert)
    c.JupyterHub.ssl_key = str(key)
c.JupyterHub.bind_url = f"{'https' if tls else 'http'}://:8000"

# -- logins --------------------------------------------------------------------------------
c.JupyterHub.authenticator_class = "roster_auth.RosterAuthenticator"
c.RosterAuthenticator.roster_file = str(CLASS_DIR / "roster.json")
c.RosterAuthenticator.instructor = INSTRUCTOR
c.Authenticator.admin_users = {INSTRUCTOR}
c.Authenticator.any_allow_config = True  # check_allowed reads the roster
# The MLflow password travels to the student's server in auth_state, encrypted at rest.
c.Authenticator.enable_auth_state = True
# A session the roster no longer backs (roster_auth.refresh_user) ends before its next spawn
# and within seconds on the hub's pages: a refresh costs a dictionary lookup unless the
# password changed.
c.Authenticator.refresh_pre_spawn = True
c.Authenticator.auth_refresh_age = 10
c.CryptKeeper.keys = [bytes.fromhex(secret("hub-crypt-key"))]

# -- the instructor's scripts and the idle culler ----------------------------------------
idle_s = int(os.environ.get("LAB_CLASS_IDLE_MINUTES", "60")) * 60
c.JupyterHub.services = [
    {"name": "class-admin", "api_token": secret("hub-api-token")},
    {
        "name": "idle-culler",
        "command": [
            sys.executable,
            "-m",
            "jupyterhub_idle_culler",
            # Loopback, not hub_connect_url: the hub's own service name may not resolve
            # yet while its task starts, and the culler's first round would die on it.
            "--url=http://127.0.0.1:8081/hub/api",
            f"--timeout={idle_s}",
            f"--cull-every={max(30, min(300, idle_s // 4))}",
        ],
    },
    {
        # The class's MLflow UI for its logged-in users (mlflow_ui.py), in the hub's menu.
        "name": MLFLOW_UI,
        "url": "http://127.0.0.1:8082",
        "command": [sys.executable, "/etc/jupyterhub/mlflow_ui.py"],
        "environment": {"LAB_CLASS_INSTRUCTOR": INSTRUCTOR, "LAB_CLASS_MLFLOW_URL": MLFLOW_URL},
        "display": True,
        # The class's own tool: no "authorize this application?" page on the way in.
        "oauth_no_confirm": True,
    },
]
c.JupyterHub.load_roles = [
    {
        "name": "class-admin",
        "scopes": [
            "admin:users",
            "admin:servers",
            "admin:auth_state",
            # The spawner's state holds where each student's workspace is (class_spawner.py's
            # pin): the class's backup reads it to fetch workspaces from other machines.
            "admin:server_state",
            # A password reset or a restore ends a student's sessions, their tokens too.
            "tokens",
            "access:servers",
            "read:hub",
        ],
        "services": ["class-admin"],
    },
    {
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    },
    {
        # The least that reads a user's MLflow password: the user model (by name) with its
        # auth_state.
        "name": "mlflow-ui",
        "scopes": ["read:users:name", "admin:auth_state"],
        "services": [MLFLOW_UI],
    },
    {
        # JupyterHub's default user role, plus the MLflow UI (students are no hub admins).
        "name": "user",
        "scopes": ["self", f"access:services!service={MLFLOW_UI}"],
    },
]

# -- student servers -----------------------------------------------------------------------
c.JupyterHub.spawner_class = "class_spawner.ClassSpawner"
c.SwarmSpawner.image = os.environ["LAB_CLASS_NOTEBOOK_IMAGE"]
c.SwarmSpawner.network_name = os.environ.get("LAB_CLASS_NETWORK", f"{STACK}_class")
c.SwarmSpawner.use_internal_ip = True
c.SwarmSpawner.use_internal_hostname = True
c.SwarmSpawner.extra_endpoint_spec = {"mode": "dnsrr"}
c.SwarmSpawner.name_template = f"{STACK}-student-{{username}}"
c.SwarmSpawner.cmd = ["/usr/local/lib/mlflow-lab/class-start.sh"]
c.SwarmSpawner.notebook_dir = WORKSPACE
c.Spawner.default_url = "/lab"
c.Spawner.port = 8888
c.Spawner.start_timeout = 300
c.Spawner.http_timeout = 180
c.Spawner.cpu_limit = float(os.environ.get("LAB_CLASS_CPU_LIMIT", "1"))
c.Spawner.mem_limit = os.environ.get("LAB_CLASS_MEM_LIMIT", "2G")
c.Spawner.environment = {
    "LAB_MLFLOW_UPSTREAM": MLFLOW_HOSTPORT,
    "LAB_COURSE_CACHE": os.environ.get("LAB_COURSE_CACHE", ""),
    "LAB_COURSE_NAME": os.environ.get("LAB_COURSE_NAME", ""),
    "LAB_COURSE_BRANCH": os.environ.get("LAB_REPO_BRANCH", "dev"),
}
CLASS_LABEL = "org.mlflow-lab.class"
STUDENT_LABEL = "org.mlflow-lab.student"
# Where each student's server runs (a ready machine, then always the same one): see
# class_spawner.py; the stack's `ready` service tells which machines are ready.
c.ClassSpawner.stack = STACK
c.ClassSpawner.class_label = f"{CLASS_LABEL}={STACK}"
# Named like the stack's own volumes.
c.ClassSpawner.workspace_template = f"{STACK}_workspace-{{username}}"
# A thirty-second of a service's weight: the hub's machine's students together (up to about
# thirty of them) weigh less than MLflow alone, so a tracking call is served first.
c.ClassSpawner.cpu_shares = 32


async def before_spawn(spawner: Any) -> None:
    mounts(spawner)


def mounts(spawner: Any) -> None:
    """The student's own workspace volume and the course repo cache (read-only)."""
    labels = {CLASS_LABEL: STACK, STUDENT_LABEL: spawner.user.name}
    volume = spawner.workspace_volume
    found = [Mount(target=WORKSPACE, source=volume, type="volume", labels=labels)]
    course = os.environ.get("LAB_CLASS_COURSE_DIR", "")
    # Only a class with a course copy mounts it: Swarm fails a task whose bind source is
    # missing, and a worker machine has the folder only once a bundle put a course there.
    if course and os.environ.get("LAB_COURSE_CACHE"):
        found.append(
            Mount(target="/opt/course-upstream", source=course, type="bind", read_only=True)
        )
    # No health check: the lab image's asks /api at the root, which the hub's /user/NAME/
    # prefix moves, and Swarm would hold the task in "starting" until it passed. The hub
    # checks the server's readiness itself.
    spawner.extra_container_spec = {"mounts": found, "healthcheck": Healthcheck(test=["NONE"])}
    spawner.extra_create_kwargs = {"labels": labels}


c.SwarmSpawner.pre_spawn_hook = before_spawn
