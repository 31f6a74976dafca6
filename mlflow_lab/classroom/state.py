"""The class's state dir: generated secrets, the instructor's account, TLS files.

Every secret is generated once (never a default anyone knows), kept 0600 in
`LAB_CLASS_STATE_DIR/secrets/` and handed to the stack as Swarm secrets.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from mlflow_lab.classroom import roster
from mlflow_lab.classroom.settings import SECRET_NAMES, ClassSettings
from mlflow_lab.core.errors import LabError


def _generate(name: str) -> str:
    if name == "instructor-password":
        return roster.new_password()
    return secrets.token_hex(32)


def secret(settings: ClassSettings, name: str) -> str:
    path = settings.secrets_dir / name
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        raise LabError(
            f"the class's {name} is missing from {settings.secrets_dir}: check "
            "LAB_CLASS_STATE_DIR, or run `invoke classroom.up` to create the class"
        ) from None


def ensure(settings: ClassSettings) -> list[str]:
    """Create what is missing; the lines to show (what was generated)."""
    made: list[str] = []
    try:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(settings.state_dir, 0o700)
        settings.secrets_dir.mkdir(mode=0o700, exist_ok=True)
        settings.hub_dir.mkdir(mode=0o700, exist_ok=True)
        settings.course_dir.mkdir(exist_ok=True)
        for name in SECRET_NAMES:
            path = settings.secrets_dir / name
            if not path.is_file() or not path.read_text(encoding="utf-8").strip():
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write(_generate(name) + "\n")
                made.append(name)
    except OSError as exc:
        raise LabError(
            f"cannot keep the class's state in {settings.state_dir}: {exc.strerror}: make "
            "LAB_CLASS_STATE_DIR a writable folder"
        ) from None
    _ensure_instructor(settings)
    _place_tls(settings)
    return made


def _ensure_instructor(settings: ClassSettings) -> None:
    accounts = roster.read_accounts(settings)
    entry = accounts.get(settings.instructor)
    if entry is None or not entry.get("admin"):
        accounts[settings.instructor] = {
            "password": roster.hash_password(secret(settings, "instructor-password")),
            "name": "Instructor",
            "admin": True,
        }
        roster.write_accounts(settings, accounts)


def _place_tls(settings: ClassSettings) -> None:
    """The hub reads its certificate from the state dir it sees; none there means HTTP."""
    tls = settings.hub_dir / "tls"
    if settings.tls_cert is None or settings.tls_key is None:
        shutil.rmtree(tls, ignore_errors=True)
        return
    tls.mkdir(mode=0o700, exist_ok=True)
    for source, name in ((settings.tls_cert, "cert.pem"), (settings.tls_key, "key.pem")):
        target = tls / name
        shutil.copyfile(source, target)
        os.chmod(target, 0o600)


def instructor_password_file(settings: ClassSettings) -> Path:
    return settings.secrets_dir / "instructor-password"
