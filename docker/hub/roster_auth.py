"""Logins from the class roster: the accounts `invoke classroom.students add` writes.

Why not a sign-up authenticator (NativeAuthenticator): a class has a roster, not
strangers signing up, and the instructor's tools must create, reset and remove the
same accounts in MLflow at the same moment; a roster file written by those tools is
the one source for both. Passwords are kept as salted PBKDF2-SHA256 hashes
(`pbkdf2_sha256$ITERATIONS$SALT_HEX$HASH_HEX`, as the host tools write them); only the
instructor's 0600 file on the host has them in clear.

The password a student logs in with is also their MLflow password: it is kept
(encrypted, JupyterHub's auth_state) and handed to their own server only, as
MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD, with MLFLOW_WORKSPACE set to their
workspace.

A session whose password the roster no longer has (a reset, a restore of older accounts,
a removed student) is stale: JupyterHub asks `refresh_user` before each spawn and every
`auth_refresh_age` (jupyterhub_config.py), and sends a stale session to the login page.
So the host tools end a session by changing the roster, without deleting the hub's user,
whose stopped server keeps the machine the student's workspace is on (class_spawner.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from jupyterhub.auth import Authenticator
from traitlets import Unicode

SCHEME = "pbkdf2_sha256"


def verify(password: str, stored: str) -> bool:
    """Whether `password` matches the stored `pbkdf2_sha256$N$SALT$HASH`."""
    try:
        scheme, iterations, salt, expected = stored.split("$")
        if scheme != SCHEME:
            return False
        digest = hashlib.pbkdf2_hmac(
            "sha256", password.encode(), bytes.fromhex(salt), int(iterations)
        )
    except ValueError:
        return False
    return hmac.compare_digest(digest.hex(), expected)


def _digest(password: str) -> bytes:
    """What the session check keeps of a password: enough to tell a changed one, fast."""
    return hashlib.sha256(password.encode()).digest()


class Roster:
    """The roster file, read again whenever it changes (students added or removed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, dict[str, Any]] = {}

    def users(self) -> dict[str, dict[str, Any]]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
            self._users = dict(loaded.get("users", {}))
            self._stamp = stamp
        return self._users


class RosterAuthenticator(Authenticator):  # type: ignore[misc]
    roster_file = Unicode("/srv/class/roster.json", config=True, help="The class roster.")
    instructor = Unicode("instructor", config=True, help="The instructor's username.")

    _roster: Roster | None = None
    # What a refresh found, per user: (stored hash, a digest of the password, it matched).
    # A refresh comes every few seconds per active user; PBKDF2 runs only when the
    # roster's hash or the session's password differs from the last time.
    _checked: dict[str, tuple[str, bytes, bool]]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._checked = {}

    @property
    def roster(self) -> Roster:
        if self._roster is None or self._roster.path != Path(self.roster_file):
            self._roster = Roster(Path(self.roster_file))
        return self._roster

    async def authenticate(self, handler: Any, data: dict[str, str]) -> dict[str, Any] | None:
        username = self.normalize_username(data.get("username", ""))
        password = data.get("password", "")
        entry = self.roster.users().get(username)
        # The hash costs a PBKDF2 of 200k rounds (a fair fraction of a second of CPU): on
        # the hub's event loop, a class logging in at once would stall every other request
        # behind it. hashlib lets go of the GIL while it hashes.
        if (
            not entry
            or not password
            or not await asyncio.to_thread(verify, password, str(entry.get("password", "")))
        ):
            self.log.warning("Failed login for %r", username)
            return None
        # The session's first refresh (before the spawn that follows) needs no hash again.
        self._checked[username] = (str(entry.get("password", "")), _digest(password), True)
        return {
            "name": username,
            "admin": bool(entry.get("admin")),
            "auth_state": {"mlflow_password": password},
        }

    async def refresh_user(self, user: Any, handler: Any = None) -> bool:
        """Whether the session's MLflow password is still the roster's (False: log in again)."""
        entry = self.roster.users().get(user.name)
        state = await user.get_auth_state() or {}
        password = str(state.get("mlflow_password", ""))
        if not entry or not password:
            return False
        stored = str(entry.get("password", ""))
        seen = self._checked.get(user.name)
        digest = _digest(password)
        if seen is not None and seen[0] == stored and hmac.compare_digest(seen[1], digest):
            return seen[2]
        valid = await asyncio.to_thread(verify, password, stored)
        self._checked[user.name] = (stored, digest, valid)
        if not valid:
            self.log.info("%s's login is stale (a new password): log in again", user.name)
        return valid

    def check_allowed(self, username: str, authentication: Any = None) -> bool:
        # A removed student's session ends with their roster entry.
        return username in self.roster.users()

    async def pre_spawn_start(self, user: Any, spawner: Any) -> None:
        state = await user.get_auth_state() or {}
        password = state.get("mlflow_password")
        if not password:
            raise RuntimeError("log out and log in again: your MLflow login is not known")
        env = {"MLFLOW_TRACKING_USERNAME": user.name, "MLFLOW_TRACKING_PASSWORD": password}
        if user.name != self.instructor:
            # The instructor (MLflow's admin) sees every workspace; a student works in theirs.
            env["MLFLOW_WORKSPACE"] = user.name
        spawner.environment.update(env)
