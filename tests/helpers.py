"""Small helpers shared by the unit and end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from mlflow_lab.ports import free_port

__all__ = ["free_port", "wait_until"]


def wait_until(
    predicate: Callable[[], bool], timeout: float, interval: float = 1.0, what: str = "condition"
) -> None:
    """Poll `predicate` until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except Exception:  # a probe that raises simply is not ready yet
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(interval)
