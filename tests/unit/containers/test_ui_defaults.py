"""docker/mlflow/ui_defaults.py: the MLflow UI's lab defaults, patched in at image build."""

from __future__ import annotations

import importlib.util
import json
import re
from types import ModuleType

import pytest

from mlflow_lab import PROJECT_ROOT


def load_script() -> ModuleType:
    path = PROJECT_ROOT / "docker" / "mlflow" / "ui_defaults.py"
    spec = importlib.util.spec_from_file_location("ui_defaults", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ui_defaults = load_script()

# The declarations as MLflow 3.13.0's minified main.*.js has them.
BUNDLE_3_13 = (
    "const o=(e,t)=>`${e}_v${t}`;"
    'let l=function(e){return e.GENAI="genai",e.MACHINE_LEARNING="machine_learning",e}({});'
    '(0,o.Mj)({key:"mlflow.workflowType",version:1,initialValue:c})'
    'const o=1,i="mlflow.settings.telemetry.enabled",a="mlflow.telemetry.info.alert.dismissed",s=1'
)
INDEX = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"/><title>MLflow</title>'
    '<script defer="defer" src="static-files/static/js/main.e54ad566.js"></script></head>'
    '<body><div id="root"></div></body></html>'
)


def test_the_bundle_it_was_written_for_passes() -> None:
    ui_defaults.check_bundle(BUNDLE_3_13)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('key:"mlflow.workflowType",version:1', 'key:"mlflow.workflowType",version:2'),
        ('MACHINE_LEARNING="machine_learning"', 'MACHINE_LEARNING="ml"'),
        ('alert.dismissed",s=1', 'alert.dismissed",s=2'),
        ("`${e}_v${t}`", "`${e}:${t}`"),
    ],
)
def test_a_bundle_that_changed_fails_the_build(old: str, new: str) -> None:
    changed = BUNDLE_3_13.replace(old, new)
    assert changed != BUNDLE_3_13
    with pytest.raises(ui_defaults.BundleChanged):
        ui_defaults.check_bundle(changed)


def test_the_script_runs_first_and_patching_twice_changes_nothing() -> None:
    patched = ui_defaults.patch_index(INDEX)
    head = patched.split("<head>", 1)[1]
    assert head.startswith(f"<script {ui_defaults.MARKER}>"), "it must run before the app"
    assert ui_defaults.patch_index(patched) == patched
    assert patched.count(ui_defaults.MARKER) == 1


def test_the_script_sets_each_default_only_when_the_browser_has_none() -> None:
    script = ui_defaults.defaults_script()
    values = json.loads(re.search(r"var d=(\{.*?\});", script).group(1))  # type: ignore[union-attr]
    assert values == {
        "mlflow.workflowType_v1": '"machine_learning"',
        "mlflow.telemetry.info.alert.dismissed_v1": "true",
    }
    assert "if(localStorage.getItem(k)===null)localStorage.setItem(k,d[k])" in script
