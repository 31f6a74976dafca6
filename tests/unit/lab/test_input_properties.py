"""Random and malformed input, beyond the listed cases: `.env` files and setting values.

Fed to `settings.load` and to the tasks (invoke's MockContext, no Docker): the answer
is always one line (LabError, or invoke's Exit from a task), never a traceback, and a
refused input changes no file: the `.env` and the state dir stay as they were.
"""

from __future__ import annotations

import string
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from invoke.context import MockContext
from invoke.exceptions import Exit

import tasks
from mlflow_lab.core import settings as lab_settings
from mlflow_lab.core.errors import LabError
from mlflow_lab.lab import images, stack
from tests.helpers import FakeDocker

NAMES = sorted(lab_settings.SETTING_NAMES)
# Values near the edges of what each setting accepts, and what users get wrong.
EDGES = [
    "", " ", "0", "1", "16", "17", "8080", "65535", "65536", "-1", "+80", "²", "٨٠٨٠", "1e3",
    "127.0.0.1", "127.0.0.2", "0.0.0.0", "192.168.1.2", "::1", "localhost",
    "a+b", "a&b#c%d", "tök", "a b", "$x", "${x}", "'q'", '"q"', "a=b", "#", " # c",
    "-x", "--upload-pack=x", "a..b", "dev", "main", "latest", "my tag", ".x",
    "lab.example.org", ",lab.example.org:*", "a,b:80", "a:99999", "http://x",
    "auto", "local", "./.lab-state", "state", "st ate", "a:b", "~", "~nobody-here/x",
    "\t", "a\nb", "a\x00b", "\x1b[31m",
]  # fmt: skip
VALUE = st.one_of(st.sampled_from(EDGES), st.text(max_size=24))
# Never an absolute path, `~` or `..` for the state dir: a successful load may write a
# token there, and that must stay inside the example's own folder.
STATE_DIR = st.one_of(
    st.sampled_from(["./.lab-state", "state", "st ate", "a:b", ""]),
    st.text(alphabet=string.ascii_letters + string.digits + " -_.:#$", max_size=12),
).filter(lambda v: not v.startswith(("/", "~")) and ".." not in v)


def value_for(name: str) -> st.SearchStrategy[str]:
    # The default too, so that good files and settings get as far as the tasks.
    good = st.just(lab_settings.default_of(name) if name in NAMES else "x")
    return st.one_of(good, STATE_DIR if name == "LAB_STATE_DIR" else VALUE)


SETTINGS_VALUES = st.dictionaries(st.sampled_from(NAMES), VALUE, max_size=6).flatmap(
    lambda d: st.fixed_dictionaries({n: value_for(n) for n in d})
)


@st.composite
def env_line(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from([*NAMES, "LAB_NOPE", "OTHER", "1X"]))
    value = draw(value_for(name))
    form = draw(st.sampled_from(["{n}={v}", "{n}='{v}'", '{n}="{v}"', "export {n}={v}"]))
    tail = draw(st.sampled_from(["", " # comment", "\t#x", "  "]))
    return form.format(n=name, v=value) + tail


ENV_TEXT = st.lists(
    st.one_of(env_line(), st.text(max_size=30), st.sampled_from(["", "# c", "=x", "X"])),
    max_size=6,
).map("\n".join)
ENV_BYTES = st.one_of(
    st.just(b""),
    st.lists(env_line(), max_size=4).map(lambda lines: "\n".join(lines).encode()),
    ENV_TEXT.map(lambda t: t.encode("utf-8")),
    st.binary(max_size=60),
)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder (None) under root."""
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        found[str(path.relative_to(root))] = None if path.is_dir() else path.read_bytes()
    return found


def one_line(text: str) -> None:
    assert text and "\n" not in text and "Traceback" not in text, text


TASKS: dict[str, Callable[[MockContext], object]] = {
    "up": lambda c: tasks.up(c),
    "down": lambda c: tasks.down(c),
    "status": lambda c: tasks.status(c),
    "clone": lambda c: tasks.clone(c),
    "logs": lambda c: tasks.logs(c, "mlflow"),
    "destroy": lambda c: tasks.destroy(c, yes=True),
}


@settings(
    max_examples=200,
    deadline=None,
    database=None,  # nothing written into the checkout
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    env_bytes=ENV_BYTES,
    environ=SETTINGS_VALUES,
    task=st.sampled_from(sorted(TASKS)),
)
def test_any_input_is_answered_in_one_line_and_refused_input_changes_nothing(
    env_bytes: bytes, environ: dict[str, str], task: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        root = Path(tmp)
        env_file = root / ".env"
        env_file.write_bytes(env_bytes)
        kept = root / ".lab-state" / lab_settings.TOKEN_FILE_NAME
        kept.parent.mkdir()
        kept.write_text("k" * 48 + "\n", encoding="utf-8")
        # Relative paths resolve in the example's folder, not in this checkout.
        mp.setattr(lab_settings, "PROJECT_ROOT", root)
        mp.setattr(lab_settings, "ENV_FILE", env_file)
        for name in NAMES:
            mp.delenv(name, raising=False)
        before = snapshot(root)

        try:
            lab = lab_settings.load(environ, env_file=env_file)
        except LabError as exc:
            one_line(str(exc))
            assert snapshot(root) == before
            refused: str | None = str(exc)
            event(f"refused: {refused.split('=')[0].split(' ')[0]}")
        else:
            refused = None
            event("accepted")
            # The one write a good load may make: the token, on first use of a state dir.
            made = set(snapshot(root)) - set(before)
            token = lab.state_dir / lab_settings.TOKEN_FILE_NAME
            assert {root / p for p in made} <= {token, *token.parents}

        # The same input through a task, as the command line gives it (the process
        # environment cannot hold a NUL).
        if any("\x00" in value for value in environ.values()):
            return
        for name, value in environ.items():
            mp.setenv(name, value)
        # An engine that answers its version, then is gone for every other call.
        fake = FakeDocker().install(mp)
        fake.fail(r".*", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock")
        fake.on(r"^docker version", "28.0\n")
        mp.setattr(stack, "preflight", lambda lab: None)
        mp.setattr(images, "stale_images", lambda compose: [])
        before_task = snapshot(root)
        context = MockContext()
        try:
            TASKS[task](context)
        except Exit as exc:
            one_line(str(exc.message))
            assert exc.code != 0
            if refused is not None:
                assert str(exc.message) == f"error: {refused}"
        else:
            assert refused is None, "a refused setting must stop every task"
        assert env_file.read_bytes() == env_bytes
        if refused is not None:
            assert snapshot(root) == before_task
        else:
            # `up` may make the course cache folder it mounts; no file changes.
            after = snapshot(root)
            assert {p: b for p, b in after.items() if b is not None} == {
                p: b for p, b in before_task.items() if b is not None
            }
