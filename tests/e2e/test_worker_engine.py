"""The second-engine fixture itself: it starts, and it leaves nothing behind, even when
its daemon fails to start."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.e2e import worker_engine


def _leftovers() -> tuple[set[str], set[str], set[str]]:
    return (
        worker_engine.links(),
        worker_engine.netns_names(),
        set(map(str, Path("/tmp").glob("labw-*"))),
    )


def test_a_worker_engine_has_its_own_address_and_hostname_and_goes_away_whole() -> None:
    before = _leftovers()
    with worker_engine.worker_engine() as worker:
        assert worker.docker("info", "--format", "{{.Name}}").stdout.strip() == worker.name
        assert worker.swarm_state() == "inactive"
        # Refused, not timed out: the worker's own address answered (nothing listens there).
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((worker.address, 9), timeout=5)
        assert worker.root.is_dir()
    assert _leftovers() == before


def test_a_worker_engine_that_fails_to_start_leaves_nothing_behind() -> None:
    before = _leftovers()
    with (
        pytest.raises(RuntimeError, match=r"the worker engine exited \d+; its log ends:"),
        worker_engine.worker_engine(["--no-such-option"]),
    ):
        pytest.fail("a daemon with an unknown option must not start")
    assert _leftovers() == before
