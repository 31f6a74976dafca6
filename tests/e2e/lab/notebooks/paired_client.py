# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python (mlops)
#     language: python
#     name: mlops
# ---

# %% [markdown]
# # A paired notebook
#
# mlflow-lab's test notebook, kept as a jupytext `.py` as the course keeps its notebooks,
# in the pattern of the Docker_AND_API unit's client: an image made with cv2, sent with
# requests; the other packages the later units import come along.

# %%
import json

import cv2
import google.genai
import numpy as np
import pyarrow
import requests
import scipy
import seaborn
import torch

# %%
image = cv2.cvtColor(np.zeros((32, 32, 3), dtype=np.uint8), cv2.COLOR_BGR2GRAY)
ok, encoded = cv2.imencode(".png", image)
health = requests.get("http://127.0.0.1:8080/health", timeout=10)

# %%
print(
    json.dumps(
        {
            "png_bytes": len(encoded) if ok else 0,
            "health": health.status_code,
            "modules": sorted(m.__name__ for m in (google.genai, pyarrow, scipy, seaborn, torch)),
        }
    )
)
