"""The classroom's invoke tasks: `invoke classroom.up`, `invoke classroom.students add FILE`, ...

One machine serves a whole class in the browser: JupyterHub and one shared MLflow on
Docker Swarm. Start with `invoke classroom.up`.
"""

from __future__ import annotations

import json
from pathlib import Path

from invoke.collection import Collection
from invoke.context import Context
from invoke.tasks import task

from mlflow_lab.classroom import backup as backup_module
from mlflow_lab.classroom import machines, roster, settings, stack, swarm
from mlflow_lab.classroom import students as students_module
from mlflow_lab.classroom import verify as verify_module
from mlflow_lab.core.cli import enable_optional_positionals
from mlflow_lab.core.errors import LabError, one_line_errors
from mlflow_lab.lab import doctor

enable_optional_positionals()


@task(
    help={
        "no_init": "Refuse instead of initialising a one-node swarm when the engine is in none.",
        "no_build": "Fail instead of building when a class image is missing or out of date.",
        "verbose": "Show the raw build log as it comes (it is always kept in the state dir).",
    }
)
@one_line_errors
def up(c: Context, no_init: bool = False, no_build: bool = False, verbose: bool = False) -> None:
    """Deploy the class (swarm, images, stack), wait until it answers, print its URLs.

    Run it again at any time: it changes only what is out of date. Every user, run,
    artifact and notebook of an earlier `classroom.down` comes back.
    """
    stack.up(settings.load(), init=not no_init, build=not no_build, verbose=verbose)


@task
@one_line_errors
def down(c: Context) -> None:
    """Remove the class stack and the student servers; every volume (all data) is kept."""
    swarm.refuse_on_worker("classroom.down")
    stack.down(settings.load())


@task(help={"yes": "Really delete: without it, nothing happens."})
@one_line_errors
def destroy(c: Context, yes: bool = False) -> None:
    """Delete the class: stack, student servers and every volume (all runs and notebooks)."""
    swarm.refuse_on_worker("classroom.destroy")
    stack.destroy(settings.load(), yes=yes)


@task(help={"json": "Print JSON for scripts (includes the API token and the join token)."})
@one_line_errors
def status(c: Context, json_: bool = False) -> None:
    """Services and health, nodes, each student's server, the hub and MLflow UI URLs, a token.

    It also prints the command that adds another machine to the class (`classroom.join`).
    """
    report = stack.status(settings.load())
    print(json.dumps(report, indent=2) if json_ else stack.format_status(report))


@task(
    help={"service": "hub, mlflow or db (default: all three).", "tail": "Lines per service."},
    positional=["service"],
    optional=["service"],
)
@one_line_errors
def logs(c: Context, service: str | None = None, tail: int = 200) -> None:
    """Show the class services' logs."""
    swarm.refuse_on_worker("classroom.logs")
    stack.logs(settings.load(), service or "", tail)


@task(
    help={
        "action": "add FILE | list | remove USER | reset-password USER",
        "target": "The roster CSV (add) or the username (remove, reset-password).",
        "delete_data": "With remove: also delete the student's notebooks and MLflow workspace.",
    },
    positional=["action", "target"],
    optional=["target"],
)
@one_line_errors
def students(c: Context, action: str, target: str | None = None, delete_data: bool = False) -> None:
    """The class's students: accounts in the hub and in MLflow, with generated passwords.

    `add FILE` reads a CSV (username[,display name], one per line) and prints the new
    accounts' passwords once; they are also kept, for the instructor only (0600), in
    LAB_CLASS_STATE_DIR/passwords.csv. `remove USER` keeps the student's data unless
    --delete-data; `reset-password USER` makes a new password and stops their server.
    """
    swarm.refuse_on_worker("classroom.students")
    # None, not "": invoke fills only positional arguments whose value is still None
    # (mlflow_lab.core.cli makes an unfilled optional one "").
    target = target or ""
    class_settings = settings.load()
    if action in ("add", "remove", "reset-password") and not target:
        what = "FILE" if action == "add" else "USER"
        raise LabError(
            f"`classroom.students {action}` needs a {what}: "
            f"`invoke classroom.students {action} {what}`"
        )
    if action == "add":
        made = students_module.add(class_settings, Path(target))
        if made:
            print(roster.table(made))
            print(f"The passwords are kept in {class_settings.passwords_file} (yours only).")
    elif action == "list":
        rows = students_module.listing(class_settings)
        print(
            roster.table(
                [(r["username"], r["display_name"], r["server"]) for r in rows],
                ("username", "display_name", "server"),
            )
        )
    elif action == "remove":
        students_module.remove(class_settings, target, delete_data=delete_data)
    elif action == "reset-password":
        print(roster.table([students_module.reset_password(class_settings, target)]))
    else:
        raise LabError(
            f"no action {action!r}: use add FILE, list, remove USER or reset-password USER"
        )


@task(help={"json": "Print the results as JSON for scripts."})
@one_line_errors
def verify(c: Context, json_: bool = False) -> None:
    """Check the running class as a student uses it; it leaves no probe behind.

    Two throwaway students (probe-<hex>): the first logs in at /hub/login, starts their
    server and logs a run with an artifact from its mlops kernel; the second must not
    read, tag or delete that run. Both are removed at the end (hub, MLflow, server,
    volume). Exit code 0 only when every check passes.
    """
    swarm.refuse_on_worker("classroom.verify")
    results = verify_module.run_checks(settings.load())
    doctor.show(results, as_json=json_, command="invoke classroom.verify")


@task(help={"output": "The file to write, e.g. class.backup.tar.gz (replaced when it exists)."})
@one_line_errors
def backup(c: Context, output: str) -> None:
    """Back up the running class: MLflow's database, artifacts, every student's notebooks.

    One tar.gz with a manifest (sha256 of each part), written whole or not at all. The
    notebooks of students on other machines are read there; a machine that is down is
    named in a warning with its students, whose notebooks stay on it.
    """
    swarm.refuse_on_worker("classroom.backup")
    manifest = backup_module.backup(settings.load(), Path(output))
    print(
        f"Wrote {output}: {len(manifest['parts'])} parts, students: "
        f"{', '.join(manifest['students']) or 'none'} (its manifest.json lists each part)."
    )
    missing = backup_module.not_included_line(manifest)
    if missing:
        print(missing)


@task(
    help={
        "file": "A backup written by `invoke classroom.backup`.",
        "yes": "Really replace the class's data: without it, only the file is checked.",
    },
    positional=["file"],
)
@one_line_errors
def restore(c: Context, file: str, yes: bool = False) -> None:
    """Put a class backup in place: it is checked first, and a safety backup is taken.

    A failure part-way writes the safety backup back: the class never has less than it had.
    Student workspaces the backup does not have are kept.
    """
    swarm.refuse_on_worker("classroom.restore")
    safety = backup_module.restore(settings.load(), Path(file), yes=yes)
    print(f"Restored the class from {file} (what it had before: {safety}).")


@task(
    help={
        "manager": "The manager's HOST:PORT, as `invoke classroom.status` prints it there.",
        "token": "The swarm's worker token, as `invoke classroom.status` prints it.",
        "image": "The class's student image ID (sha256:...), which this machine must have.",
        "course": "Where this machine must have the class's course copy (the class has one).",
    },
    positional=["manager", "token"],
)
@one_line_errors
def join(c: Context, manager: str, token: str, image: str = "", course: str = "") -> None:
    """Run on another machine: its Docker engine joins the class's swarm as a worker.

    `invoke classroom.status` on the manager prints the whole command. Load the class's
    bundle here first (`invoke bundle --classroom` on the manager, `invoke load FILE`
    here): the join refuses a machine without the class's student image and course copy.
    The machines must reach each other on 2377/tcp, 7946/tcp and udp, and 4789/udp.
    """
    joined = machines.join(manager, token, image, course)
    role = "a manager" if joined.manager else "a worker"
    print(
        f"This machine ({joined.hostname}) joined the class's swarm as {role}: "
        "`invoke classroom.nodes` on the manager lists it."
    )


@task(help={"json": "Print JSON for scripts."})
@one_line_errors
def nodes(c: Context, json_: bool = False) -> None:
    """Run on the manager: the class's machines, which take students, how many each runs.

    Per machine: role, state, availability, whether it is ready for student servers (or
    why not: down, drained, missing the student image or the course copy) and how many run
    there.
    """
    found = machines.nodes(settings.load().stack)
    print(json.dumps(found, indent=2) if json_ else machines.format_nodes(found))


@task
@one_line_errors
def leave(c: Context) -> None:
    """Run on a worker machine: its Docker engine leaves the class's swarm.

    The manager refuses: its swarm is the class's (it ends after `classroom.down`).
    """
    left = machines.leave()
    print(
        f"This machine ({left.hostname}) left the class's swarm: `invoke classroom.nodes` "
        "on the manager shows it as down until it is removed there (`docker node rm`)."
    )


ns = Collection(
    "classroom",
    up, down, destroy, status, logs, students, verify, backup, restore, join, nodes, leave,
)  # fmt: skip
