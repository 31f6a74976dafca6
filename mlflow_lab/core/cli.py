"""Optional positional arguments for invoke tasks (`classroom.students list`,
`classroom.logs [SERVICE]`).

invoke 3 has none: a positional argument whose default is None must be given, and one
with any other default is never filled from the command line (its value is never None,
which is how the parser decides that a word belongs to it). A positional argument that is
also named in `optional=` here is filled when a word is there and otherwise gets "" when
the task's words end, instead of the "did not receive required positional arguments"
error.
"""

from __future__ import annotations

from typing import Any

from invoke.parser.parser import ParseMachine

_complete_context = ParseMachine.complete_context


def _complete_with_optional_positionals(self: Any) -> None:
    context = self.context
    if context is not None:
        for arg in context.positional_args:
            if arg.optional and arg.value is None:
                arg.set_value("", cast=False)
    _complete_context(self)


def enable_optional_positionals() -> None:
    """Install the rule once (idempotent); tasks.py calls it before invoke parses tasks."""
    ParseMachine.complete_context = _complete_with_optional_positionals  # type: ignore[method-assign]
