"""mlflow-lab: provisions the MLflow Tracking lab (MLflow + JupyterLab) on one machine.

`tasks.py` is the public interface; each module here holds one concern.
"""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = PROJECT_ROOT / "compose.yaml"
CLASSROOM_FILE = PROJECT_ROOT / "classroom.yaml"
