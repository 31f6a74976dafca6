"""`invoke classroom.verify`'s probes inside a probe student's server.

Run as `python3 class_probe.py COMMAND ARGS...`; each command prints one JSON document.
The MLflow login, workspace and run come from the environment the verify sets.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

TRACKING_URI = "http://127.0.0.1:8080"


def track(experiment: str, payload: str) -> dict[str, Any]:
    """The lab guide's calls, as a student's kernel makes them; what came back."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(TRACKING_URI)
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        mlflow.log_param("probe", payload)
        mlflow.log_metric("probe_metric", 1.5)
        mlflow.log_text(payload, "verify.txt")
    client = MlflowClient()
    got = client.get_run(run.info.run_id)
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(client.download_artifacts(run.info.run_id, "verify.txt", tmp)).read_text()
    return {
        "run": run.info.run_id,
        "user": os.environ.get("MLFLOW_TRACKING_USERNAME"),
        "workspace": os.environ.get("MLFLOW_WORKSPACE"),
        "param": got.data.params.get("probe"),
        "metric": got.data.metrics.get("probe_metric"),
        "artifact": text,
    }


def _outcomes(actions: dict[str, Callable[[], object]]) -> dict[str, str]:
    from mlflow.exceptions import MlflowException

    outcome: dict[str, str] = {}
    for name, action in actions.items():
        try:
            action()
            outcome[name] = "allowed"
        except MlflowException as exc:
            outcome[name] = str(exc.error_code)
    return outcome


def attack(run_id: str) -> dict[str, str]:
    """Another login's client on `run_id`: each answer (PERMISSION_DENIED when refused)."""
    from mlflow import MlflowClient

    client = MlflowClient(TRACKING_URI)
    return _outcomes(
        {
            "read": lambda: client.get_run(run_id),
            "tag": lambda: client.set_tag(run_id, "probe", "touched"),
            "delete": lambda: client.delete_run(run_id),
        }
    )


def browse() -> dict[str, str]:
    """With MLFLOW_WORKSPACE set to another student's workspace (the 3.13 client reads it
    from the environment). MLflow answers a search with only what the login may read (an
    empty list, not a 403); creating there is refused."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(TRACKING_URI)
    outcome: dict[str, str] = {}
    try:
        seen = client.search_experiments()
        outcome["list their workspace"] = "allowed" if seen else "sees nothing"
    except MlflowException as exc:
        outcome["list their workspace"] = str(exc.error_code)
    outcome.update(
        _outcomes(
            {
                "create in their workspace": lambda: client.create_experiment(
                    "mlflow-lab-verify-intruder"
                )
            }
        )
    )
    return outcome


def intact(run_id: str) -> dict[str, Any]:
    """The owner's view of the run after the attack."""
    from mlflow import MlflowClient

    run = MlflowClient(TRACKING_URI).get_run(run_id)
    return {"stage": run.info.lifecycle_stage, "tag": run.data.tags.get("probe")}


def kernel_run(kernel: str, code: str, timeout: float) -> dict[str, Any]:
    """The lab's kernel probe, pointed at this single-user server's /user/NAME/ prefix."""
    sys.path.insert(0, str(Path(__file__).parent))  # lab_probe.py lies beside this file
    import lab_probe

    prefix = os.environ["JUPYTERHUB_SERVICE_PREFIX"].rstrip("/")
    lab_probe.JUPYTER_ADDRESS = "127.0.0.1:8888" + prefix
    found: dict[str, Any] = lab_probe.kernel_run(kernel, code, timeout)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="class_probe", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("kernel-run", help="run the code on stdin in a kernel")
    run.add_argument("kernel")
    run.add_argument("timeout", type=float)
    for name in ("attack", "intact"):
        commands.add_parser(name).add_argument("run_id")
    commands.add_parser("browse")
    args = parser.parse_args(argv)
    found: object
    if args.command == "kernel-run":
        found = kernel_run(args.kernel, sys.stdin.read(), args.timeout)
    elif args.command == "attack":
        found = attack(args.run_id)
    elif args.command == "intact":
        found = intact(args.run_id)
    else:
        found = browse()
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
