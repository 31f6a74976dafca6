"""Static checks of the student lab in lab/ (no MLflow server, no network, no Docker).

The lab's source of truth is the jupytext "percent" script; the notebook is generated
from it with `jupytext --to ipynb lab/mlflow_tracking_lab.py`. These tests keep the pair,
the Thai guide (lab/README.md) and the lab's own rules from drifting apart.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import jupytext
import nbformat
import pytest

REPO = Path(__file__).resolve().parents[3]
LAB = REPO / "lab"
SCRIPT = LAB / "mlflow_tracking_lab.py"
NOTEBOOK = LAB / "mlflow_tracking_lab.ipynb"
README = LAB / "README.md"

TRACKING_URI = "http://127.0.0.1:8080"
EXPERIMENT_NAME = "mlflow-tracking-lab"
PARTS = range(1, 9)
# Packages the lab may import: what the course's Jupyter image ships.
ALLOWED_IMPORTS = {
    "tempfile",
    "pathlib",
    "matplotlib",
    "mlflow",
    "numpy",
    "pandas",
    "sklearn",
    "torch",
    "PIL",
    "yaml",
}
PART_HEADING = re.compile(r"^#{2,3} (ส่วนที่ (\d+): .+?)\s*$", re.MULTILINE)


def _cells(notebook: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


@pytest.fixture(scope="module")
def script_notebook() -> nbformat.NotebookNode:
    """The notebook that jupytext builds from the script right now."""
    return jupytext.read(SCRIPT)


@pytest.fixture(scope="module")
def committed_notebook() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


@pytest.fixture(scope="module")
def script_tree() -> ast.Module:
    return ast.parse(SCRIPT.read_text(encoding="utf-8"), filename=str(SCRIPT))


def _calls(tree: ast.AST, attribute: str) -> list[ast.Call]:
    """Calls like `x.attribute(...)` or `attribute(...)` anywhere in the tree."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name == attribute:
                found.append(node)
    return found


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return "?"


def _part_headings(markdown: str) -> list[tuple[int, str]]:
    return [(int(number), title) for title, number in PART_HEADING.findall(markdown)]


# --- the script/notebook pair ---------------------------------------------------------


def test_notebook_cells_match_script(script_notebook, committed_notebook):
    expected = _cells(script_notebook)
    actual = _cells(committed_notebook)
    assert len(actual) == len(expected), (
        f"notebook has {len(actual)} cells, the script gives {len(expected)}: "
        "run `jupytext --to ipynb lab/mlflow_tracking_lab.py`"
    )
    for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
        assert got == want, (
            f"cell {index} differs between script and notebook: "
            "run `jupytext --to ipynb lab/mlflow_tracking_lab.py`"
        )


def test_notebook_kernelspec_is_mlops(committed_notebook):
    kernelspec = committed_notebook.metadata.get("kernelspec", {})
    assert kernelspec.get("name") == "mlops"
    assert kernelspec.get("display_name") == "Python (mlops)"
    assert kernelspec.get("language") == "python"


def test_script_header_pairs_with_notebook(script_notebook):
    metadata = script_notebook.metadata
    assert metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent"
    assert metadata.get("kernelspec", {}).get("name") == "mlops"


def test_notebook_is_stored_without_outputs(committed_notebook):
    code_cells = [c for c in committed_notebook.cells if c.cell_type == "code"]
    assert code_cells, "the notebook has no code cells"
    for cell in code_cells:
        assert cell.get("outputs") == [], "clear the outputs before committing"
        assert cell.get("execution_count") is None


# --- the script itself ----------------------------------------------------------------


def test_script_is_valid_python():
    compile(SCRIPT.read_text(encoding="utf-8"), str(SCRIPT), "exec")


def test_tracking_uri_is_the_course_server(script_tree):
    calls = _calls(script_tree, "set_tracking_uri")
    assert calls, "the lab never calls mlflow.set_tracking_uri"
    for call in calls:
        assert not call.keywords
        assert len(call.args) == 1
        argument = call.args[0]
        assert isinstance(argument, ast.Constant) and argument.value == TRACKING_URI, (
            f"line {call.lineno}: set_tracking_uri must get the literal {TRACKING_URI!r}"
        )
    assert TRACKING_URI in README.read_text(encoding="utf-8")


def test_experiment_name(script_tree):
    constants = {node.value for node in ast.walk(script_tree) if isinstance(node, ast.Constant)}
    assert EXPERIMENT_NAME in constants
    assert _calls(script_tree, "set_experiment")
    assert _calls(script_tree, "get_experiment_by_name")


def test_every_run_is_started_in_a_with_block(script_tree):
    in_with = {
        id(item.context_expr)
        for node in ast.walk(script_tree)
        if isinstance(node, ast.With)
        for item in node.items
    }
    calls = _calls(script_tree, "start_run")
    assert calls
    for call in calls:
        assert id(call) in in_with, (
            f"line {call.lineno}: start_run() outside a `with` leaves the run open"
        )
    nested = [
        c
        for c in calls
        if any(k.arg == "nested" and getattr(k.value, "value", None) is True for k in c.keywords)
    ]
    assert nested, "part 7 needs child runs: start_run(nested=True)"


def test_models_are_logged_with_name_not_artifact_path(script_tree):
    calls = _calls(script_tree, "log_model")
    flavors = {_dotted(call.func) for call in calls}
    assert {"mlflow.sklearn.log_model", "mlflow.pytorch.log_model"} <= flavors
    for call in calls:
        keywords = {k.arg: k.value for k in call.keywords}
        assert "artifact_path" not in keywords, f"line {call.lineno}: use name="
        assert getattr(keywords.get("name"), "value", None) == "model"
        assert "signature" in keywords and "input_example" in keywords


def test_lab_uses_the_taught_apis(script_tree):
    used = {
        _dotted(node.func)
        for node in ast.walk(script_tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    expected = {
        "mlflow.get_tracking_uri",
        "mlflow.active_run",
        "mlflow.log_param",
        "mlflow.log_params",
        "mlflow.log_metric",
        "client.get_run",
        "client.get_metric_history",
        "mlflow.log_figure",
        "mlflow.log_artifact",
        "mlflow.log_dict",
        "mlflow.log_text",
        "client.list_artifacts",
        "mlflow.artifacts.download_artifacts",
        "mlflow.artifacts.load_dict",
        "mlflow.artifacts.load_text",
        "mlflow.pyfunc.load_model",
        "mlflow.sklearn.load_model",
        "mlflow.pytorch.load_model",
        "mlflow.sklearn.autolog",
        "mlflow.search_runs",
        "mlflow.set_tags",
        "client.set_tag",
    }
    assert not expected - used, f"missing from the lab: {sorted(expected - used)}"


def test_autolog_is_switched_off_again(script_tree):
    autolog = sorted(_calls(script_tree, "autolog"), key=lambda c: c.lineno)
    assert autolog, "the lab never calls autolog()"
    disable = [
        k.arg == "disable" and getattr(k.value, "value", None) is True for k in autolog[-1].keywords
    ]
    assert any(disable), "the last autolog() call must be autolog(disable=True)"


def test_imports_stay_within_the_image(script_tree):
    imported = set()
    for node in ast.walk(script_tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert not imported - ALLOWED_IMPORTS, sorted(imported - ALLOWED_IMPORTS)


# --- the guide --------------------------------------------------------------------------


def test_every_part_has_a_heading_in_script_and_readme(script_notebook):
    script_markdown = "\n".join(
        cell.source for cell in script_notebook.cells if cell.cell_type == "markdown"
    )
    script_parts = _part_headings(script_markdown)
    readme_parts = _part_headings(README.read_text(encoding="utf-8"))

    assert [n for n, _ in script_parts] == list(PARTS), script_parts
    assert [n for n, _ in readme_parts] == list(PARTS), readme_parts
    assert script_parts == readme_parts, "part titles differ between script and README"


def test_readme_names_the_services_and_workspace():
    readme = README.read_text(encoding="utf-8")
    for needle in (
        "http://127.0.0.1:8080",
        "http://127.0.0.1:8888",
        "/home/student/workspace/mlflow-tracking-lab/",
        "/home/student/workspace/MLOps",
        "mlflow-artifacts:/1",
        EXPERIMENT_NAME,
    ):
        assert needle in readme, f"README.md does not mention {needle}"
