"""The roster CSV, the accounts file the hub reads and the passwords file (no Docker)."""

from __future__ import annotations

import asyncio
import json
import stat
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from mlflow_lab.classroom import roster
from mlflow_lab.classroom import settings as class_settings
from mlflow_lab.core.errors import LabError
from tests.helpers import container_module, isolate_settings


def parse(text: str) -> list[roster.Student]:
    return roster.parse_csv(Path("class.csv"), text, reserved=("instructor",))


def test_usernames_and_display_names_with_or_without_a_header() -> None:
    assert parse("username,name\nalice,Alice A\nbob\n") == [
        roster.Student("alice", "Alice A"),
        roster.Student("bob", ""),
    ]
    assert parse("# a comment\n\ncarol , Carol C \n") == [roster.Student("carol", "Carol C")]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("alice\nbob\nalice\n", "class.csv line 3: 'alice' is already on line 1"),
        ("alice\n,Nobody\n", "class.csv line 2: the username is empty"),
        ("Alice\n", "'Alice' is not a valid username"),
        ("al ice\n", "is not a valid username"),
        ("bob-\n", "is not a valid username"),
        ("default\n", "is not a valid username"),
        ("instructor\n", "'instructor' is reserved"),
        ("\n# nothing\n", "class.csv has no usernames"),
    ],
)
def test_bad_rosters_are_refused_in_one_line(text: str, says: str) -> None:
    with pytest.raises(LabError) as caught:
        parse(text)
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_hubs_authenticator_accepts_the_hosts_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    # JupyterHub lives in the hub's image only: a stand-in base class is enough here.
    fake = types.ModuleType("jupyterhub.auth")
    fake.Authenticator = object  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "jupyterhub", types.ModuleType("jupyterhub"))
    monkeypatch.setitem(sys.modules, "jupyterhub.auth", fake)
    auth = container_module("hub", "roster_auth")
    stored = roster.hash_password("k7mq-x3vt-9pfa", iterations=1000)
    assert auth.verify("k7mq-x3vt-9pfa", stored)
    assert not auth.verify("k7mq-x3vt-9pfb", stored)
    assert not auth.verify("k7mq-x3vt-9pfa", "garbage")


def _authenticator(monkeypatch: pytest.MonkeyPatch, roster_file: Path) -> Any:
    """The hub's RosterAuthenticator on a stand-in for JupyterHub's base class (JupyterHub
    lives in the hub's image only), reading `roster_file`."""
    import traitlets.config

    class Authenticator(traitlets.config.LoggingConfigurable):
        def normalize_username(self, username: str) -> str:
            return username.lower()

    fake = types.ModuleType("jupyterhub.auth")
    fake.Authenticator = Authenticator  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "jupyterhub", types.ModuleType("jupyterhub"))
    monkeypatch.setitem(sys.modules, "jupyterhub.auth", fake)
    module = container_module("hub", "roster_auth")
    return module.RosterAuthenticator(roster_file=str(roster_file))


def test_a_login_hashes_off_the_hubs_event_loop(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stored = roster.hash_password("k7mq-x3vt-9pfa")  # the real cost: what a class pays
    roster_file = tmp_path / "roster.json"
    roster_file.write_text(json.dumps({"users": {"alice": {"password": stored}}}))
    auth = _authenticator(monkeypatch, roster_file)

    async def logins() -> tuple[list[Any], int]:
        ticks = 0

        async def other_requests() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.002)

        ticker = asyncio.create_task(other_requests())
        await asyncio.sleep(0)
        tries = [("alice", "k7mq-x3vt-9pfa"), ("Alice", "k7mq-x3vt-9pfb"), ("bob", "x")]
        found = await asyncio.gather(
            *(auth.authenticate(None, {"username": u, "password": p}) for u, p in tries)
        )
        ticker.cancel()
        return list(found), ticks

    (right, wrong, stranger), ticks = asyncio.run(logins())
    assert right == {
        "name": "alice",
        "admin": False,
        "auth_state": {"mlflow_password": "k7mq-x3vt-9pfa"},
    }
    assert wrong is None and stranger is None
    # Two hashes of 200k rounds each: the loop went on serving meanwhile.
    assert ticks >= 10, f"the event loop stalled while hashing ({ticks} ticks)"


class HubUser:
    """What refresh_user reads of JupyterHub's user: the name and the login's auth_state."""

    def __init__(self, name: str, password: str | None) -> None:
        self.name, self.password = name, password

    async def get_auth_state(self) -> dict[str, str] | None:
        return None if self.password is None else {"mlflow_password": self.password}


def test_a_session_ends_when_the_roster_no_longer_has_its_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    roster_file = tmp_path / "roster.json"

    def write(users: dict[str, str]) -> None:
        hashed = {
            user: {"password": roster.hash_password(password, iterations=1000)}
            for user, password in users.items()
        }
        roster_file.write_text(json.dumps({"users": hashed}))

    write({"alice": "k7mq-x3vt-9pfa", "bob": "b0b-b0b-b0b"})
    auth = _authenticator(monkeypatch, roster_file)
    module = sys.modules["roster_auth"]
    hashed: list[str] = []
    real_verify = module.verify
    monkeypatch.setattr(module, "verify", lambda p, s: hashed.append(p) or real_verify(p, s))

    def fresh(user: HubUser) -> bool:
        return bool(asyncio.run(auth.refresh_user(user, None)))

    alice = HubUser("alice", "k7mq-x3vt-9pfa")
    login = asyncio.run(auth.authenticate(None, {"username": "alice", "password": alice.password}))
    assert login and hashed == ["k7mq-x3vt-9pfa"]
    assert fresh(alice) and fresh(alice) and fresh(alice)
    assert hashed == ["k7mq-x3vt-9pfa"], "the login's hash only, while nothing changed"
    assert not fresh(HubUser("alice", "an-old-one")), "a session from before a reset"
    assert not fresh(HubUser("bob", None)), "no MLflow password kept: log in again"
    write({"alice": "n3w-pass-word"})  # alice's password reset, bob removed
    assert not fresh(alice)
    assert not fresh(HubUser("bob", "b0b-b0b-b0b"))
    assert fresh(HubUser("alice", "n3w-pass-word"))


def test_the_hash_format_is_the_one_the_hub_parses() -> None:
    scheme, iterations, salt, digest = roster.hash_password("pw").split("$")
    assert scheme == "pbkdf2_sha256" and int(iterations) >= 100_000
    assert len(bytes.fromhex(salt)) == 16 and len(bytes.fromhex(digest)) == 32


def test_generated_passwords_are_long_and_unambiguous() -> None:
    seen = {roster.new_password() for _ in range(50)}
    assert len(seen) == 50
    for password in seen:
        assert len(password) == 14 and not set(password) & set("01ilo")


def test_passwords_and_accounts_files_are_the_instructors_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate_settings(monkeypatch, tmp_path)
    monkeypatch.setenv("LAB_CLASS_STATE_DIR", str(tmp_path / "class"))
    settings = class_settings.load(env_file=tmp_path / "no.env")
    roster.write_passwords(settings, {"bob": ("Bob", "p-w"), "alice": ("", "x")})
    roster.write_accounts(settings, {"alice": {"password": "h", "name": "", "admin": False}})
    for path in (settings.passwords_file, settings.roster_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert settings.passwords_file.read_text().splitlines() == [
        "username,display_name,password",
        "alice,,x",
        "bob,Bob,p-w",
    ]
    assert roster.read_passwords(settings) == {"alice": ("", "x"), "bob": ("Bob", "p-w")}
    assert set(roster.read_accounts(settings)) == {"alice"}


def test_table() -> None:
    assert roster.table([("alice", "Alice", "abcd")]).splitlines() == [
        "username  display_name  password",
        "alice     Alice         abcd",
    ]
