"""`invoke bench --classroom`: its arithmetic, its input checks and its Docker calls (faked)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from invoke.context import MockContext
from invoke.exceptions import Exit

import tasks
from mlflow_lab.classroom import bench, state
from mlflow_lab.classroom import bench_figures as fig
from mlflow_lab.classroom import settings as class_settings
from mlflow_lab.classroom.settings import ClassSettings
from mlflow_lab.core.errors import LabError
from tests.helpers import FakeDocker, isolate_settings


@pytest.fixture
def class_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ClassSettings:
    isolate_settings(monkeypatch, tmp_path)
    monkeypatch.setenv("LAB_CLASS_STATE_DIR", str(tmp_path / "class"))
    return bench.bench_settings(class_settings.load(env_file=tmp_path / "no.env"), tmp_path)


def lab_json(**fields: Any) -> str:
    found = {"latencies_s": [0.1], "errors": [], "run_ids": [], "slowest": [], "failed": ""}
    return json.dumps({**found, "wall_s": 30.0, **fields})


# -- parsing what the container printed ------------------------------------------------


def test_the_lab_run_is_the_last_json_line_after_any_noise() -> None:
    out = (
        "a warning from torch\n"
        + lab_json(
            latencies_s=[0.2, 0.4],
            errors=["POST runs/create: HTTP 503"],
            run_ids=["r1", "r2"],
            slowest=[["POST runs/create", 0.4]],
        )
        + "\n"
    )
    run = fig.parse_lab_run("bench-01", out)
    assert run.latencies_s == [0.2, 0.4] and run.run_ids == ["r1", "r2"]
    assert run.slowest == [("POST runs/create", 0.4)] and run.wall_s == 30.0
    assert run.error_count == 1


def test_a_probe_that_printed_nothing_is_a_failed_lab_naming_why() -> None:
    run = fig.parse_lab_run("bench-02", "", "Traceback...\nOSError: [Errno 28] No space", 1)
    assert run.failed == "the lab probe printed no result: OSError: [Errno 28] No space"
    assert run.error_count == 1 and run.latencies_s == []
    assert "exit code 137" in fig.parse_lab_run("bench-03", "", "", 137).failed


def test_a_lab_that_raised_counts_as_one_error_beside_its_failed_calls() -> None:
    run = fig.parse_lab_run("x", lab_json(errors=["a", "b"], failed="KeyError: 'x'"))
    assert run.error_count == 3


# -- statistics ----------------------------------------------------------------------------


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert fig.percentile(values, 99) == 99.0
    assert fig.percentile(values, 50) == 50.0
    assert fig.percentile(values, 100) == 100.0
    assert fig.percentile([3.0], 99) == 3.0
    assert fig.percentile([], 99) == 0.0
    # Few calls: the p99 is the slowest one, never an average that hides it.
    assert fig.percentile([0.1, 0.1, 5.0], 99) == 5.0


def test_the_load_pools_every_students_calls() -> None:
    load = fig.LoadFigures(
        [
            fig.LabRun("a", latencies_s=[0.1] * 99, wall_s=50),
            fig.LabRun("b", latencies_s=[3.0], errors=["e1"], wall_s=70),
            fig.LabRun("c", failed="boom"),
        ]
    )
    assert load.p99_s == 0.1 and load.p50_s == 0.1
    assert load.errors == 2 and load.lab_wall_s == 70
    assert load.first_errors == ["c: boom", "b: e1"]


# -- how many all-in-one containers, how many students ----------------------------------


def test_the_baseline_is_what_fits_with_a_margin_and_at_most_the_cap() -> None:
    per, margin = fig.BASELINE_MEM_MB, fig.MEMORY_MARGIN_MB
    assert fig.baseline_count(20, 64 * 1024) == fig.BASELINE_CAP
    assert fig.baseline_count(2, 64 * 1024) == 2
    assert fig.baseline_count(20, margin + 3 * per + per - 1) == 3
    assert fig.baseline_count(20, margin + per - 1) == 0


@pytest.mark.parametrize(
    ("flag", "wanted"), [(True, bench.DEFAULT_STUDENTS), ("5", 5), (" 12 ", 12), ("-1", -1)]
)
def test_the_classroom_flag_is_a_number_or_alone_the_default(flag: str | bool, wanted: int) -> None:
    assert bench.students_wanted(flag) == wanted


def test_a_classroom_flag_that_is_no_number_is_one_line() -> None:
    with pytest.raises(LabError, match=r"^--classroom ten: give a number of students, e\.g\."):
        bench.students_wanted("ten")


def test_no_students_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "mem_available_mb", lambda: 64 * 1024.0)
    with pytest.raises(LabError, match=r"^--classroom 0: give a number of students of at least 1$"):
        bench.check_students(0)


def test_a_class_that_does_not_fit_names_one_that_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "mem_available_mb", lambda: 8 * 1024.0)
    most = fig.most_students(8 * 1024)
    assert fig.memory_needed_mb(most) <= 8 * 1024 < fig.memory_needed_mb(most + 1)
    with pytest.raises(LabError, match=f"use --classroom {most} or free memory$"):
        bench.check_students(most + 1)
    bench.check_students(most)


def test_a_soak_of_negative_length_is_refused_before_anything_runs(
    class_config: ClassSettings,
) -> None:
    with pytest.raises(LabError, match=r"^--soak -1: give the soak's length in minutes"):
        bench.run(class_config, students=4, smoke=False, soak_minutes=-1)


# -- capacity and the table ------------------------------------------------------------


def test_capacity_counts_each_student_at_their_peak_plus_a_share_of_the_services() -> None:
    cap = fig.capacity(
        students=20,
        cores=2,
        peak_mb_per_student=462,
        idle_mb_per_student=100,
        shared_mb=1240,
        busy_core_s=1200,
        load_ok=True,
    )
    assert cap.per_gib == pytest.approx(1024 / (462 + 62))
    assert cap.per_gib_idle == pytest.approx(1024 / (100 + 62))
    assert cap.per_core == 10 and cap.per_core_met
    assert cap.core_s_per_lab == 60
    assert "NOT within" in fig.format_capacity(
        fig.capacity(
            students=4,
            cores=2,
            peak_mb_per_student=1,
            idle_mb_per_student=1,
            shared_mb=1,
            busy_core_s=1,
            load_ok=False,
        ),
        4,
        2,
    )


def class_figures(**changes: Any) -> fig.ClassFigures:
    found = fig.ClassFigures(
        students=20,
        all_ready_s=48.0,
        median_ready_s=30.0,
        not_ready=[],
        load=fig.LoadFigures([fig.LabRun("a", latencies_s=[0.5, 1.5], wall_s=300)]),
        idle_mb_per_student=90.0,
        shared_mb={"hub": 100.0, "mlflow": 300.0, "db": 0.0},
        peak_mb_per_student=500.0,
        busy_core_s=1000.0,
        lost_runs=0,
    )
    for key, value in changes.items():
        setattr(found, key, value)
    return found


def baseline(idle_mb: float = 1000.0) -> fig.BaselineFigures:
    return fig.BaselineFigures(
        containers=6,
        all_ready_s=20.0,
        load=fig.LoadFigures([fig.LabRun("aio-1", latencies_s=[0.2, 0.3], wall_s=90)]),
        idle_mb_per_container=idle_mb,
    )


def test_the_table_gives_ratios_and_says_which_targets_are_met() -> None:
    text = fig.table(class_figures(), baseline())
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()[2:]}
    assert rows["20 log in and spawn at once: all ready (median)"].endswith("<= 60 s: met |")
    p99 = next(line for name, line in rows.items() if name.startswith("lab script in all"))
    assert "1.50 s (0.50 s)" in p99 and "5.00x" in p99 and "<= 2 s: met" in p99
    memory = rows["idle memory per student, services' share included (PSS)"]
    # 90 MB + 400 MB / 20 students = 110 MB against 1000 MB: 0.11x, within 0.2x.
    assert "| 110 MB | 1000 MB | 0.11x | <= 0.2x: met |" in memory


def test_the_table_says_not_met_plainly() -> None:
    slow = class_figures(all_ready_s=75.0, not_ready=["bench-20: timeout"], lost_runs=2)
    text = fig.table(slow, baseline(idle_mb=300.0))
    assert "75.0 s, 1 not ready" in text and "<= 60 s: NOT met" in text
    assert "0; 2 lost" in text and "0: NOT met" in text
    assert "<= 0.2x: NOT met" in text


def test_the_table_without_a_baseline_says_so() -> None:
    assert "<= 0.2x: no baseline" in fig.table(class_figures(), None)


def test_soak_growth_is_checked_against_its_bound() -> None:
    assert fig.growth_bound_mb(100) == fig.SOAK_GROWTH_FLOOR_MB
    assert fig.growth_bound_mb(1000) == pytest.approx(1000 * fig.SOAK_GROWTH_FRACTION)
    soak = fig.SoakFigures(
        minutes=10,
        students=10,
        labs=30,
        logins=30,
        samples={"hub": [100.0, 120.0], "mlflow": [1000.0, 1300.0], "db": [50.0]},
        load=fig.LoadFigures([fig.LabRun("a", latencies_s=[0.1])]),
        lost_runs=0,
    )
    report = fig.soak_report(soak)
    assert "30 logins, 30 lab runs" in report and "0 runs lost (met)" in report
    assert "hub: 100 120 MB; growth +20 MB (bound 64 MB: met)" in report
    assert "mlflow: 1000 1300 MB; growth +300 MB (bound 150 MB: NOT met)" in report
    assert "db: 50 MB; growth +0 MB" in report


# -- Docker calls (faked) ------------------------------------------------------------------


def test_runs_are_counted_with_the_instructors_password_on_stdin_only(
    fake_docker: FakeDocker, class_config: ClassSettings
) -> None:
    state.ensure(class_config)
    password = state.secret(class_config, "instructor-password")
    answer = {"runs": {"bench-01": ["r1", "r2"], "bench-02": ["r3"]}}
    fake_docker.on(r"^docker run --rm -i --network mlflow-class-bench_class ", json.dumps(answer))
    runs = [
        fig.LabRun("bench-01", run_ids=["r1", "r2"]),
        fig.LabRun("bench-02", run_ids=["r3", "r4"]),
        fig.LabRun("bench-01", run_ids=["r5"]),
    ]
    assert bench.lost_runs(class_config, runs) == 2  # r4 and r5 are not in MLflow
    (call,) = fake_docker.calls
    assert call.input == password and password not in call.line
    assert call.line.endswith("runs mlflow-tracking-lab bench-01 bench-02")
    assert "MLFLOW_TRACKING_USERNAME=instructor" in call.line


def test_runs_that_cannot_be_counted_are_one_line(
    fake_docker: FakeDocker, class_config: ClassSettings
) -> None:
    state.ensure(class_config)
    fake_docker.on(r"^docker run --rm", stderr="Error: network not found", code=125)
    with pytest.raises(LabError, match=r"^could not count the runs in MLflow: Error: network"):
        bench.stored_runs(class_config, ["bench-01"])


def test_an_all_in_one_container_runs_mlflow_with_its_defaults_and_jupyterlab(
    fake_docker: FakeDocker,
) -> None:
    fake_docker.on(r"^docker run --detach ", "cid\n")
    fake_docker.on(r"^docker exec --detach ")
    fake_docker.on(r"^docker exec .* ready ", '{"ready": true, "waiting": [], "s": 4.2}')
    bench.start_all_in_one("mlflow-lab/jupyter:t", "mlflow-class-bench-aio-1")
    run, server, ready = fake_docker.argvs
    assert f"{fig.BASELINE_MEM_MB}m" in run and f"{bench.TOOL_SOURCE}:{bench.TOOL}:ro" in run
    assert run[run.index("mlflow-lab/jupyter:t") + 1 :][:2] == ["jupyter", "lab"]
    # Only the port differs from `mlflow server`'s defaults: the lab script calls 8080.
    assert server[-4:] == ["mlflow", "server", "--port", "8080"]
    assert ready[-2:] == ["http://127.0.0.1:8080/health", "http://127.0.0.1:8888/api"]


def test_an_all_in_one_container_that_never_answers_is_one_line(fake_docker: FakeDocker) -> None:
    fake_docker.on(r"^docker run --detach ", "cid\n")
    fake_docker.on(r"^docker exec --detach ")
    fake_docker.on(
        r"^docker exec .* ready ",
        '{"ready": false, "waiting": ["http://127.0.0.1:8080/health"], "s": 300}',
    )
    with pytest.raises(LabError, match=r"aio-1 did not answer \['http://127.0.0.1:8080/health'\]"):
        bench.start_all_in_one("img", "mlflow-class-bench-aio-1")


def info(state_name: str) -> str:
    return json.dumps({"Swarm": {"LocalNodeState": state_name, "ControlAvailable": True}})


def test_a_swarm_the_benchmark_created_is_left_with_its_gwbridge(fake_docker: FakeDocker) -> None:
    fake_docker.on(r"^docker info", [info("inactive"), info("active")])
    fake_docker.fail(r"^docker network inspect docker_gwbridge", "No such network")
    fake_docker.on(r"^docker swarm leave --force$")
    fake_docker.on(r"^docker network rm docker_gwbridge$")
    with bench.engine_kept():
        pass
    assert fake_docker.lines[-2:] == [
        "docker swarm leave --force",
        "docker network rm docker_gwbridge",
    ]


def test_a_swarm_that_was_there_stays(fake_docker: FakeDocker) -> None:
    fake_docker.on(r"^docker info", info("active"))
    fake_docker.on(r"^docker network inspect docker_gwbridge", "[{}]")
    with pytest.raises(KeyboardInterrupt), bench.engine_kept():
        raise KeyboardInterrupt
    assert not fake_docker.matching("swarm leave|network rm")


def test_a_lab_whose_exec_failed_is_a_failed_lab(fake_docker: FakeDocker) -> None:
    fake_docker.fail(r"^docker exec c1 python3 ", "OCI runtime exec failed", code=126)
    run = bench.lab_in("c1", "bench-01")
    assert run.failed == "the lab probe printed no result: OCI runtime exec failed"


def test_idle_memory_is_the_pss_of_the_containers_processes(
    fake_docker: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_docker.on(r"^docker top c1 -eo pid$", "PID\n11\n12\n")
    seen: list[list[int]] = []
    monkeypatch.setattr(bench.lab_bench, "pss_mb", lambda pids: seen.append(pids) or 42.0)
    assert bench.container_mb("c1") == 42.0 and seen == [[11, 12]]
    fake_docker.fail(r"^docker top c2", "No such container: c2")
    assert bench.container_mb("c2") == 0.0


# -- the task --------------------------------------------------------------------------


def test_a_soak_without_classroom_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate_settings(monkeypatch, tmp_path)
    with pytest.raises(
        Exit, match=r"^error: --soak measures the classroom server: add --classroom$"
    ):
        tasks.bench(MockContext(), soak=10)


def test_the_task_hands_the_class_settings_and_the_number_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    isolate_settings(monkeypatch, tmp_path)
    seen: dict[str, Any] = {}

    def run(user: ClassSettings, **kwargs: Any) -> str:
        seen.update(kwargs, stack=user.stack)
        return "the figures"

    monkeypatch.setattr(bench, "run", run)
    tasks.bench(MockContext(), classroom=True, soak=10)  # `--classroom` alone
    assert seen == {"students": 20, "smoke": False, "soak_minutes": 10, "stack": "mlflow-class"}
    assert capsys.readouterr().out == "the figures\n"
    tasks.bench(MockContext(), classroom="7", smoke=True)
    assert seen["students"] == 7 and seen["smoke"] is True
