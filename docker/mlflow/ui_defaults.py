"""Give the MLflow UI the defaults of a tracking lab. Runs once, at image build time.

MLflow 3.13's UI opens on its GenAI view: an experiment shows trace charts and a
"Detect Issues" popover instead of the runs table, and the home page greets every new
browser with a notice about UI telemetry. The UI takes both choices from the browser's
localStorage only: the server has no setting for either (the workflow type is a
hard-coded GENAI default in the bundle). So index.html gets a small script, run before
the app, that stores the lab's choices when the browser has none yet; a student who
switches to GenAI keeps that choice.

The keys are internals of MLflow's bundle, so the build checks that the bundle still
declares them exactly so, and fails (naming what changed) rather than ship a no-op.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

MARKER = 'data-mlflow-lab="ui-defaults"'

# localStorage key (as the UI stores it: `${key}_v${version}`) -> JSON value, each with
# the declarations that must be in the bundle for the key to mean what we think.
DEFAULTS: dict[str, tuple[object, tuple[str, ...]]] = {
    # Classic experiment tracking (runs table, charts, models) rather than GenAI.
    "mlflow.workflowType_v1": (
        "machine_learning",
        (r'key:"mlflow\.workflowType",version:1\b', r'MACHINE_LEARNING="machine_learning"'),
    ),
    # The server runs with MLFLOW_DISABLE_TELEMETRY, so the notice would not be true here.
    "mlflow.telemetry.info.alert.dismissed_v1": (
        True,
        (r'"mlflow\.telemetry\.info\.alert\.dismissed",\w+=1\b',),
    ),
}
# How the UI's useLocalStorage hook names its keys.
STORAGE_KEY_FORMAT = r"`\$\{\w+\}_v\$\{\w+\}`"


class BundleChanged(Exception):
    """MLflow's UI bundle no longer matches what these defaults were written for."""


def ui_build_dir() -> Path:
    spec = importlib.util.find_spec("mlflow")
    if spec is None or not spec.submodule_search_locations:
        raise BundleChanged("mlflow is not installed in this interpreter")
    return Path(next(iter(spec.submodule_search_locations))) / "server" / "js" / "build"


def check_bundle(bundle: str) -> None:
    if not re.search(STORAGE_KEY_FORMAT, bundle):
        raise BundleChanged("the UI no longer stores settings as `${key}_v${version}`")
    for key, (_, declarations) in DEFAULTS.items():
        if not all(re.search(pattern, bundle) for pattern in declarations):
            raise BundleChanged(f"the UI bundle no longer declares {key} as expected")


def defaults_script() -> str:
    values = {key: json.dumps(value) for key, (value, _) in DEFAULTS.items()}
    return (
        f"<script {MARKER}>(function(){{var d={json.dumps(values)};"
        "for(var k in d){try{if(localStorage.getItem(k)===null)localStorage.setItem(k,d[k]);}"
        "catch(e){}}})();</script>"
    )


def patch_index(index_html: str) -> str:
    """index.html with the defaults script first in <head>; patching twice changes nothing."""
    without = re.sub(rf"<script {re.escape(MARKER)}>.*?</script>", "", index_html, flags=re.S)
    if "<head>" not in without:
        raise BundleChanged("index.html has no <head>")
    return without.replace("<head>", "<head>" + defaults_script(), 1)


def main() -> None:
    build = ui_build_dir()
    index = build / "index.html"
    bundle = "\n".join(p.read_text(encoding="utf-8") for p in build.glob("static/js/main.*.js"))
    try:
        check_bundle(bundle)
        index.write_text(patch_index(index.read_text(encoding="utf-8")), encoding="utf-8")
    except BundleChanged as exc:
        sys.exit(f"ui_defaults: {exc}: review docker/mlflow/ui_defaults.py for this MLflow")
    print(f"ui_defaults: {index} starts the UI on {DEFAULTS['mlflow.workflowType_v1'][0]}")


if __name__ == "__main__":
    main()
