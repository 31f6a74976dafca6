"""The class roster: the CSV the instructor gives, the accounts file the hub reads, and
the passwords file only the instructor can read.

The hub reads `roster.json` (hashes only) from the state dir; the clear passwords are
written once to `passwords.csv` (0600) and shown once as a table.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_lab.classroom.settings import ClassSettings, valid_username
from mlflow_lab.core.errors import LabError

# The format docker/hub/roster_auth.py verifies: pbkdf2_sha256$ITERATIONS$SALT_HEX$HASH_HEX.
SCHEME = "pbkdf2_sha256"
ITERATIONS = 200_000
# No 0/o, 1/l/i: passwords are read off a printed sheet.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
PASSWORD_HEADER = ("username", "display_name", "password")


@dataclass(frozen=True)
class Student:
    username: str
    display_name: str = ""


def hash_password(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{SCHEME}${iterations}${salt.hex()}${digest.hex()}"


def new_password() -> str:
    """Three groups of four (about 59 bits), easy to type from a printed sheet."""
    return "-".join("".join(secrets.choice(_ALPHABET) for _ in range(4)) for _ in range(3))


def parse_csv(path: Path, text: str | None = None, reserved: tuple[str, ...] = ()) -> list[Student]:
    """Usernames (and optional display names) from a CSV; LabError on the first bad line."""
    if text is None:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise LabError(
                f"cannot read the roster {path}: {exc.strerror}: check the path"
            ) from None
    found: list[Student] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if number == 1 and cells[0].lower() in ("username", "user", "login"):
            continue  # a header row
        name = cells[0]
        where = f"{path.name} line {number}"
        if not name:
            raise LabError(f"{where}: the username is empty: give every row a username")
        if not valid_username(name):
            raise LabError(
                f"{where}: {name!r} is not a valid username: use 2-32 lower-case letters, "
                "digits and '-', starting with a letter and not ending with '-'"
            )
        if name in reserved:
            raise LabError(f"{where}: {name!r} is reserved (the instructor's): rename the student")
        if name in seen:
            raise LabError(
                f"{where}: {name!r} is already on line {seen[name]}: keep one of the two rows"
            )
        seen[name] = number
        found.append(Student(name, cells[1] if len(cells) > 1 else ""))
    if not found:
        raise LabError(f"{path.name} has no usernames: one per line, optionally `,display name`")
    return found


def _write_private(path: Path, text: str) -> None:
    """Write `text` readable by its owner only, replacing the file in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def read_accounts(settings: ClassSettings) -> dict[str, dict[str, Any]]:
    """The hub's accounts: username to {password (hash), name, admin}."""
    if not settings.roster_file.is_file():
        return {}
    loaded = json.loads(settings.roster_file.read_text(encoding="utf-8"))
    return dict(loaded.get("users", {}))


def write_accounts(settings: ClassSettings, accounts: dict[str, dict[str, Any]]) -> None:
    # Hashes only, but still nobody else's business: 0600 (the hub reads it as root).
    _write_private(
        settings.roster_file, json.dumps({"users": accounts}, indent=1, sort_keys=True) + "\n"
    )


def read_passwords(settings: ClassSettings) -> dict[str, tuple[str, str]]:
    """username to (display name, password) from the instructor's passwords file."""
    if not settings.passwords_file.is_file():
        return {}
    rows = list(csv.reader(io.StringIO(settings.passwords_file.read_text(encoding="utf-8"))))
    return {row[0]: (row[1], row[2]) for row in rows[1:] if len(row) >= 3}


def write_passwords(settings: ClassSettings, passwords: dict[str, tuple[str, str]]) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PASSWORD_HEADER)
    for name in sorted(passwords):
        writer.writerow([name, *passwords[name]])
    _write_private(settings.passwords_file, out.getvalue())


def table(rows: Sequence[Sequence[str]], header: Sequence[str] = PASSWORD_HEADER) -> str:
    """Plain text columns, one row per student (or per node)."""
    cells = [header, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)
