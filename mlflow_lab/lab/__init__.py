"""The single-machine lab: one machine, one MLflow, one JupyterLab (compose.yaml)."""
