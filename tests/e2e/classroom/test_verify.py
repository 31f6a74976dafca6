"""`invoke classroom.verify` on the session's class: every check passes, no probe is left."""

from __future__ import annotations

import json

from tests.e2e.classroom.conftest import Classroom, docker

ACCOUNTS = "/usr/local/lib/mlflow-lab/class_accounts.py"


def test_verify_passes_and_leaves_no_probe_behind(classroom: Classroom) -> None:
    users_before = {u["name"] for u in classroom.admin().users()}
    done = classroom.invoke("classroom.verify", check=False, timeout=900)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    lines = done.stdout.strip().splitlines()
    names = [line.split()[1] for line in lines]
    assert names == ["hub", "enrol", "login", "server", "tracking", "isolation", "cleanup"]
    assert all(line.startswith("pass  ") for line in lines), done.stdout
    probes = sorted({w for line in lines for w in line.split() if w.startswith("probe-")})
    probes = [p.strip(":,;()'") for p in probes]
    assert probes, done.stdout
    # Nothing of the probes is left: hub user, roster entry, MLflow user and workspace,
    # their server's service and volume.
    assert {u["name"] for u in classroom.admin().users()} == users_before
    roster = json.loads((classroom.state_dir / "hub" / "roster.json").read_text())["users"]
    listed = docker("exec", classroom.service_container("mlflow"), "python3", ACCOUNTS, "list")
    mlflow = json.loads(listed.stdout.strip().splitlines()[-1])
    services = docker("service", "ls", "--format", "{{.Name}}").stdout
    volumes = docker("volume", "ls", "-q").stdout
    for probe in probes:
        assert probe not in roster
        assert probe not in mlflow["users"] and probe not in mlflow["workspaces"], mlflow
        assert probe not in services and probe not in volumes
