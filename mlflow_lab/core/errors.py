"""The one error type the tasks turn into a one-line message and a non-zero exit."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class LabError(Exception):
    """A problem the user can fix; the message names the setting or resource and the fix."""


def one_line_errors(func: F) -> F:
    """For invoke tasks: a LabError becomes one line on stderr and exit code 1, never a
    traceback; Ctrl+C exits 130."""
    from invoke.exceptions import Exit

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LabError as exc:
            raise Exit(f"error: {exc}", code=1) from None
        except KeyboardInterrupt:
            raise Exit("interrupted", code=130) from None

    return wrapper  # type: ignore[return-value]
