"""The classroom benchmark's arithmetic: lab runs parsed, percentiles, capacity, the table.

No Docker here (mlflow_lab.classroom.bench measures; this turns measures into figures).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# The targets of issue #16, each used once: in the checks and in the table.
ERRORS_TARGET = 0
P99_TARGET_S = 2.0
READY_TARGET_S = 60.0
MEMORY_RATIO_TARGET = 0.2
# All-in-one containers: how many at most, and the memory each may use (its --memory):
# K * BASELINE_MEM_MB plus the margin must fit in what the machine has free.
BASELINE_CAP = 6
BASELINE_MEM_MB = 3072
MEMORY_MARGIN_MB = 3072
# What one student's server needs while it runs the lab (its PSS peak on the reference
# machine: 428 MB with 20 students, 589 MB with 3; README, "Classroom benchmark"), and what
# the class's services take (878 MB measured).
STUDENT_PEAK_MB = 700
SHARED_MB = 1024
MIB_PER_GIB = 1024


@dataclass
class LabRun:
    """One run of the lab script in one container, as class_bench.py `lab` reported it."""

    who: str
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    slowest: list[tuple[str, float]] = field(default_factory=list)
    failed: str = ""
    wall_s: float = 0.0

    @property
    def error_count(self) -> int:
        return len(self.errors) + (1 if self.failed else 0)


def parse_json_line(stdout: str) -> dict[str, Any]:
    """The last line of the output that is a JSON object; {} when none is."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            found = json.loads(line)
        except ValueError:
            continue
        if isinstance(found, dict):
            return found
    return {}


def parse_lab_run(who: str, stdout: str, stderr: str = "", code: int = 0) -> LabRun:
    """The last JSON line of the probe's output; a run that printed none failed."""
    found = parse_json_line(stdout)
    if "latencies_s" in found:
        return LabRun(
            who=who,
            latencies_s=[float(s) for s in found["latencies_s"]],
            errors=[str(e) for e in found.get("errors", [])],
            run_ids=[str(r) for r in found.get("run_ids", [])],
            slowest=[(str(w), float(s)) for w, s in found.get("slowest", [])],
            failed=str(found.get("failed", "")),
            wall_s=float(found.get("wall_s", 0.0)),
        )
    last = (stderr or stdout).strip().splitlines()
    reason = last[-1] if last else f"exit code {code}, no output"
    return LabRun(who=who, failed=f"the lab probe printed no result: {reason}"[:300])


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class LoadFigures:
    """All lab runs of one side (the class, or the all-in-one containers), taken together."""

    runs: list[LabRun]

    @property
    def latencies(self) -> list[float]:
        return [s for run in self.runs for s in run.latencies_s]

    @property
    def p50_s(self) -> float:
        return percentile(self.latencies, 50)

    @property
    def p99_s(self) -> float:
        return percentile(self.latencies, 99)

    @property
    def errors(self) -> int:
        return sum(run.error_count for run in self.runs)

    @property
    def first_errors(self) -> list[str]:
        found = [f"{r.who}: {e}" for r in self.runs for e in ([r.failed] if r.failed else [])]
        found += [f"{r.who}: {e}" for r in self.runs for e in r.errors]
        return found[:3]

    @property
    def lab_wall_s(self) -> float:
        return max((run.wall_s for run in self.runs), default=0.0)

    @property
    def slowest(self) -> list[tuple[str, float]]:
        pairs = [(f"{r.who} {w}", s) for r in self.runs for w, s in r.slowest]
        return sorted(pairs, key=lambda p: -p[1])[:3]


def baseline_count(students: int, available_mb: float) -> int:
    """All-in-one containers to start: as many as fit with the margin, at most the cap."""
    fit = int((available_mb - MEMORY_MARGIN_MB) // BASELINE_MEM_MB)
    return max(0, min(students, BASELINE_CAP, fit))


def memory_needed_mb(students: int) -> int:
    return students * STUDENT_PEAK_MB + SHARED_MB + MEMORY_MARGIN_MB


def most_students(available_mb: float) -> int:
    return max(0, int((available_mb - SHARED_MB - MEMORY_MARGIN_MB) // STUDENT_PEAK_MB))


@dataclass
class Capacity:
    per_gib: float  # students per GiB of the machine's memory, the shared services included
    per_gib_idle: float  # the same with every server idle (logged in, no lab running)
    per_core: float  # students per core: the N who ran the lab at once, over the cores
    per_core_met: bool  # whether those N stayed within the latency and error targets
    core_s_per_lab: float  # CPU (core-seconds, whole machine) per student's lab run


def capacity(
    *,
    students: int,
    cores: int,
    peak_mb_per_student: float,
    idle_mb_per_student: float,
    shared_mb: float,
    busy_core_s: float,
    load_ok: bool,
) -> Capacity:
    """From the measures: memory sets the students per GiB (each at their lab-time peak,
    plus their share of the services), the simultaneous lab run the students per core."""
    share = shared_mb / students
    running, idle = peak_mb_per_student + share, idle_mb_per_student + share
    return Capacity(
        per_gib=MIB_PER_GIB / running if running else 0.0,
        per_gib_idle=MIB_PER_GIB / idle if idle else 0.0,
        per_core=students / cores,
        per_core_met=load_ok,
        core_s_per_lab=busy_core_s / students,
    )


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "n/a"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


@dataclass
class ClassFigures:
    students: int
    all_ready_s: float
    median_ready_s: float
    not_ready: list[str]
    load: LoadFigures
    idle_mb_per_student: float  # a student's server alone (PSS), idle after the lab
    shared_mb: dict[str, float]  # hub, mlflow, db at idle
    peak_mb_per_student: float  # while all N ran the lab
    busy_core_s: float  # the whole machine's CPU while all N ran the lab
    lost_runs: int

    @property
    def shared_total_mb(self) -> float:
        return sum(self.shared_mb.values())

    @property
    def idle_mb_all_in(self) -> float:
        """A student's server plus their share of the hub, MLflow and the database."""
        return self.idle_mb_per_student + self.shared_total_mb / self.students


@dataclass
class BaselineFigures:
    containers: int
    all_ready_s: float
    load: LoadFigures
    idle_mb_per_container: float


def rows(ours: ClassFigures, base: BaselineFigures | None) -> list[tuple[str, ...]]:
    n, k = ours.students, base.containers if base else 0
    ready_ok = not ours.not_ready and ours.all_ready_s <= READY_TARGET_S
    ready = f"{ours.all_ready_s:.1f} s"
    if ours.not_ready:
        ready += f", {len(ours.not_ready)} not ready"
    table: list[tuple[str, ...]] = [
        (
            f"{n} log in and spawn at once: all ready (median)",
            f"{ready} ({ours.median_ready_s:.1f} s)",
            f"{base.all_ready_s:.1f} s ({k} started)" if base else "",
            "",
            f"<= {READY_TARGET_S:g} s: {verdict(ready_ok)}",
        ),
        (
            f"lab script in all at once: tracking p99 (p50), {len(ours.load.latencies)} calls",
            f"{ours.load.p99_s:.2f} s ({ours.load.p50_s:.2f} s)",
            f"{base.load.p99_s:.2f} s ({base.load.p50_s:.2f} s)" if base else "",
            ratio(ours.load.p99_s, base.load.p99_s) if base else "",
            f"<= {P99_TARGET_S:g} s: {verdict(ours.load.p99_s <= P99_TARGET_S)}",
        ),
        (
            "lab script: errors (failed calls + failed labs); runs lost",
            f"{ours.load.errors}; {ours.lost_runs} lost",
            f"{base.load.errors}" if base else "",
            "",
            f"{ERRORS_TARGET}: {verdict(ours.load.errors == ERRORS_TARGET and not ours.lost_runs)}",
        ),
        (
            "lab script: slowest student's whole lab",
            f"{ours.load.lab_wall_s:.0f} s",
            f"{base.load.lab_wall_s:.0f} s" if base else "",
            "",
            "",
        ),
        (
            "idle memory per student, services' share included (PSS)",
            f"{ours.idle_mb_all_in:.0f} MB",
            f"{base.idle_mb_per_container:.0f} MB" if base else "",
            ratio(ours.idle_mb_all_in, base.idle_mb_per_container) if base else "",
            f"<= {MEMORY_RATIO_TARGET:g}x: "
            + (
                verdict(ours.idle_mb_all_in <= MEMORY_RATIO_TARGET * base.idle_mb_per_container)
                if base
                else "no baseline"
            ),
        ),
        (
            "idle memory: a student's server alone",
            f"{ours.idle_mb_per_student:.0f} MB",
            "",
            ratio(ours.idle_mb_per_student, base.idle_mb_per_container) if base else "",
            "",
        ),
        (
            "idle memory: shared services (" + ", ".join(ours.shared_mb) + ")",
            f"{ours.shared_total_mb:.0f} MB ("
            + ", ".join(f"{v:.0f}" for v in ours.shared_mb.values())
            + ")",
            "",
            "",
            "",
        ),
    ]
    return table


def table(ours: ClassFigures, base: BaselineFigures | None) -> str:
    header = ("Measure", f"Class ({ours.students} students)", "All-in-one", "Ratio", "Target")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(ours, base)]
    return "\n".join(lines)


def format_capacity(cap: Capacity, students: int, cores: int) -> str:
    met = "within" if cap.per_core_met else "NOT within"
    return (
        f"Capacity: {cap.per_gib:.1f} students per GiB while all run the lab "
        f"({cap.per_gib_idle:.1f} idle), each at their measured PSS plus their share of the "
        f"services; "
        f"{cap.per_core:.1f} students per core ({students} "
        f"ran the lab at once on {cores} cores, {met} the p99 and error targets); a lab run "
        f"costs {cap.core_s_per_lab:.0f} core-seconds per student."
    )


@dataclass
class SoakFigures:
    minutes: float
    students: int
    labs: int
    logins: int
    samples: dict[str, list[float]]  # service -> MB, one a minute
    load: LoadFigures
    lost_runs: int

    def growth_mb(self, service: str) -> float:
        found = self.samples.get(service, [])
        return found[-1] - found[0] if len(found) > 1 else 0.0


# Memory a service may gain over a soak (from its first sample, a minute in, to its last):
# its caches warm and the database grows with every run, but no more than this.
SOAK_GROWTH_FRACTION = 0.15
SOAK_GROWTH_FLOOR_MB = 64.0


def growth_bound_mb(first_mb: float) -> float:
    return max(SOAK_GROWTH_FLOOR_MB, SOAK_GROWTH_FRACTION * first_mb)


def soak_report(soak: SoakFigures) -> str:
    lines = [
        f"Soak: {soak.minutes:g} min, {soak.students} students logging in and out: "
        f"{soak.logins} logins, {soak.labs} lab runs, tracking p99 {soak.load.p99_s:.2f} s, "
        f"{soak.load.errors} errors, {soak.lost_runs} runs lost "
        f"({verdict(soak.load.errors == 0 and soak.lost_runs == 0)})."
    ]
    for service, values in soak.samples.items():
        if not values:
            continue
        bound = growth_bound_mb(values[0])
        growth = soak.growth_mb(service)
        lines.append(
            f"  {service}: {' '.join(f'{v:.0f}' for v in values)} MB; growth {growth:+.0f} MB "
            f"(bound {bound:.0f} MB: {verdict(growth <= bound)})"
        )
    lines += [f"  first errors: {e}" for e in soak.load.first_errors]
    return "\n".join(lines)
