"""Fixtures for the unit tests: nothing here needs Docker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import FakeDocker


@pytest.fixture
def fake_docker(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDocker]:
    """The Docker gateway replaced by scripted answers (see FakeDocker)."""
    fake = FakeDocker().install(monkeypatch)
    yield fake
    fake.check_teardown()
