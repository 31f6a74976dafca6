"""The invoke namespace: the lab's tasks at the top, the classroom's under `classroom.`."""

from __future__ import annotations

import copy
import shlex

import pytest
from invoke.exceptions import ParseError
from invoke.parser import Parser

import tasks


def test_the_lab_keeps_its_task_names_and_the_class_has_its_namespace() -> None:
    names = set(tasks.ns.task_names)
    assert {"up", "down", "status", "verify", "bundle", "lock"} <= names
    assert {
        "classroom.up",
        "classroom.down",
        "classroom.destroy",
        "classroom.status",
        "classroom.students",
        "classroom.logs",
        "classroom.join",
        "classroom.nodes",
        "classroom.leave",
    } <= names


def test_every_classroom_task_documents_its_options() -> None:
    classroom = tasks.ns.collections["classroom"]
    for name, task in classroom.tasks.items():
        assert task.__doc__, name
        for arg in task.get_arguments():
            assert arg.help, f"classroom.{name} --{arg.name} has no help"


def _parsed(*argv: str) -> dict[str, object]:
    # A copy: building the parser's contexts uses up each task's help texts (invoke pops
    # them), which later tests read.
    result = Parser(contexts=copy.deepcopy(tasks.ns).to_contexts()).parse_argv(list(argv))
    return {name: arg.value for name, arg in result[0].args.items()}


def test_optional_positionals_may_be_left_out_or_given() -> None:
    assert _parsed("classroom.students", "list")["target"] == ""
    assert _parsed("classroom.students", "add", "class.csv")["target"] == "class.csv"
    assert _parsed("classroom.logs")["service"] == ""
    joined = _parsed("classroom.join", "10.0.0.1:2377", "SWMTKN-1-x-y")
    assert (joined["manager"], joined["token"]) == ("10.0.0.1:2377", "SWMTKN-1-x-y")
    assert _parsed("classroom.logs", "hub")["service"] == "hub"
    # A required one is still required.
    with pytest.raises(ParseError, match="action"):
        _parsed("classroom.students")


def test_the_printed_join_command_parses_with_its_quoted_course_path() -> None:
    image = "sha256:" + "5e" * 32
    printed = (
        f"invoke classroom.join 10.0.0.1:2377 SWMTKN-1-x-y --image {image} "
        f"--course {shlex.quote('/srv/my class/course/c-01.git')}"
    )
    joined = _parsed(*shlex.split(printed)[1:])
    assert (joined["manager"], joined["image"], joined["course"]) == (
        "10.0.0.1:2377", image, "/srv/my class/course/c-01.git"
    )  # fmt: skip
