# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python (mlops)
#     language: python
#     name: mlops
# ---

# %% [markdown]
# # Lab: MLflow Tracking พื้นฐาน
#
# ใน Lab นี้เราจะฝึกใช้ **MLflow Tracking** บันทึกทุกอย่างที่เกิดขึ้นระหว่างการทดลอง Machine Learning
# ตั้งแต่การเชื่อมต่อ Server ไปจนถึงการค้นหา Run ที่ดีที่สุด ทั้งหมด 8 ส่วน:
#
# 1. เชื่อมต่อ MLflow Server
# 2. สร้าง/เลือก Experiment
# 3. สร้าง Run และบันทึก Parameters
# 4. บันทึก Metrics แบบมี step
# 5. บันทึก Artifacts (รูป, CSV, JSON, ข้อความ)
# 6. บันทึก Model (scikit-learn, PyTorch และ autolog)
# 7. Nested Runs สำหรับ Hyperparameter Search
# 8. ค้นหาผลลัพธ์และติด Tag ให้ Run ที่ดีที่สุด
#
# **ก่อนเริ่ม:** MLflow Server ต้องเปิดอยู่ที่ `http://127.0.0.1:8080`
# ให้รันทีละ cell จากบนลงล่าง (รันซ้ำทั้ง Lab ได้ ทุกครั้งจะได้ Run ใหม่)

# %% [markdown]
# ## เตรียมเครื่องมือ
#
# import ไลบรารีทั้งหมดที่ใช้ใน Lab และกำหนด random seed ให้ผลลัพธ์ออกมาเหมือนเดิมทุกครั้ง

# %%
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # วาดรูปลงไฟล์ (เราจะเก็บรูปเป็น artifact)
import matplotlib.pyplot as plt
import mlflow
import mlflow.pytorch
import mlflow.sklearn
import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.models import infer_signature
from PIL import Image
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score
from sklearn.model_selection import cross_val_score, train_test_split
from torch import nn

SEED = 42
np.random.seed(SEED)
torch.manual_seed(SEED)

print(f"MLflow version : {mlflow.__version__}")
print(f"PyTorch version: {torch.__version__}")

# %% [markdown]
# ## ส่วนที่ 1: การเชื่อมต่อ MLflow Server
#
# MLflow ต้องรู้ว่าจะส่งข้อมูลการทดลองไปเก็บที่ไหน เราบอกผ่าน **Tracking URI**
# ใน Lab นี้ Server อยู่ที่ `http://127.0.0.1:8080`

# %%
mlflow.set_tracking_uri("http://127.0.0.1:8080")

print(f"✅ Tracking URI: {mlflow.get_tracking_uri()}")

# %% [markdown]
# ## ส่วนที่ 2: การสร้าง Experiment
#
# **Experiment** คือกล่องที่รวม Run ของงานเดียวกันไว้ด้วยกัน
# `mlflow.set_experiment()` จะสร้าง Experiment ใหม่ถ้ายังไม่มี หรือเลือกอันเดิมถ้ามีอยู่แล้ว
# จึงรัน cell นี้ซ้ำได้โดยไม่เกิด error

# %%
EXPERIMENT_NAME = "mlflow-tracking-lab"

mlflow.set_experiment(EXPERIMENT_NAME)
mlflow.set_experiment_tags({"course": "mlops", "topic": "tracking-basics"})

experiment = mlflow.get_experiment_by_name(EXPERIMENT_NAME)
print(f"📁 Experiment Name  : {experiment.name}")
print(f"🆔 Experiment ID    : {experiment.experiment_id}")
print(f"📂 Artifact Location: {experiment.artifact_location}")
print(f"🔄 Lifecycle Stage  : {experiment.lifecycle_stage}")
print(f"🏷️ Tags             : {dict(sorted(experiment.tags.items()))}")

# %% [markdown]
# ## ส่วนที่ 3: การสร้าง Run และบันทึก Parameters
#
# **Run** คือการทดลอง 1 ครั้ง ส่วน **Parameter** คือค่าที่เราตั้งไว้ก่อนเริ่ม (input ของการทดลอง)
#
# - `mlflow.start_run()` ใช้คู่กับ `with` เสมอ เมื่อออกจาก block แล้ว Run จะถูกปิด (FINISHED) ให้อัตโนมัติ
# - `log_param()` บันทึกทีละค่า, `log_params()` บันทึกทีละหลายค่าด้วย dict
# - `MlflowClient().get_run()` อ่านข้อมูล Run กลับมาจาก Server

# %%
with mlflow.start_run(run_name="params-demo") as run:
    mlflow.log_param("model_type", "RandomForestClassifier")
    mlflow.log_params(
        {
            "n_estimators": 50,
            "max_depth": 4,
            "criterion": "gini",
            "test_size": 0.2,
            "random_state": SEED,
        }
    )
    mlflow.set_tags({"author": "student", "purpose": "learn-params"})

    active = mlflow.active_run()
    print(f"▶️ Active run id  : {active.info.run_id}")
    print(f"▶️ Active run name: {active.info.run_name}")

params_run_id = run.info.run_id
print(f"หลังออกจาก with -> active_run() = {mlflow.active_run()}")

# %%
client = MlflowClient()
stored_run = client.get_run(params_run_id)

print(f"Status: {stored_run.info.status}")
print("Parameters ที่อ่านกลับมาจาก Server:")
for key, value in sorted(stored_run.data.params.items()):
    print(f"  {key:<13} = {value!r}")

# %% [markdown]
# ## ส่วนที่ 4: การบันทึก Metrics
#
# **Metric** คือค่าที่วัดได้จากการทดลอง (output) และเปลี่ยนได้ตามเวลา
# ถ้าใส่ `step=` MLflow จะเก็บเป็น **ประวัติ** (history) ทำให้วาดกราฟ loss ต่อ epoch ได้
#
# ตัวอย่างนี้จำลองค่า loss ของการ train 10 epochs

# %%
EPOCHS = 10
rng = np.random.default_rng(SEED)

with mlflow.start_run(run_name="metrics-demo") as run:
    mlflow.log_param("epochs", EPOCHS)
    for epoch in range(1, EPOCHS + 1):
        train_loss = 1.2 * np.exp(-0.35 * epoch) + 0.05 + rng.normal(0, 0.01)
        val_loss = train_loss + 0.06 + abs(rng.normal(0, 0.02))
        mlflow.log_metric("train_loss", round(float(train_loss), 4), step=epoch)
        mlflow.log_metric("val_loss", round(float(val_loss), 4), step=epoch)

metrics_run_id = run.info.run_id
latest = client.get_run(metrics_run_id).data.metrics
print(f"ค่าล่าสุดที่เก็บใน run.data.metrics: {latest}")

# %%
train_history = client.get_metric_history(metrics_run_id, "train_loss")
val_history = client.get_metric_history(metrics_run_id, "val_loss")
print(f"train_loss มีทั้งหมด {len(train_history)} ค่า")

history_df = (
    pd.DataFrame({"step": m.step, "train_loss": m.value} for m in train_history)
    .merge(
        pd.DataFrame({"step": m.step, "val_loss": m.value} for m in val_history),
        on="step",
    )
    .sort_values("step")
    .reset_index(drop=True)
)
print(history_df.to_string(index=False))

# %% [markdown]
# ## ส่วนที่ 5: การบันทึก Artifacts
#
# **Artifact** คือไฟล์ใด ๆ ที่เกิดจากการทดลอง เช่น รูปกราฟ ตารางข้อมูล ไฟล์ config
# ไฟล์จะถูกส่งไปเก็บที่ Server (ดูได้ในแท็บ *Artifacts* ของ Run)
#
# | ฟังก์ชัน | ใช้เก็บ |
# |---|---|
# | `log_figure` | รูป matplotlib เป็น PNG |
# | `log_artifact` | ไฟล์ที่มีอยู่แล้วบนเครื่อง เช่น CSV |
# | `log_dict` | dict เป็น JSON/YAML |
# | `log_text` | ข้อความเป็นไฟล์ .txt |

# %%
fig, ax = plt.subplots(figsize=(6, 4))
ax.plot(history_df["step"], history_df["train_loss"], marker="o", label="train_loss")
ax.plot(history_df["step"], history_df["val_loss"], marker="s", label="val_loss")
ax.set_xlabel("epoch")
ax.set_ylabel("loss")
ax.set_title("Loss per epoch")
ax.grid(alpha=0.3)
ax.legend()

train_config = {
    "model": "demo-net",
    "epochs": EPOCHS,
    "optimizer": "adam",
    "learning_rate": 0.01,
}
summary_text = (
    f"final train_loss = {history_df['train_loss'].iloc[-1]:.4f}\n"
    f"final val_loss   = {history_df['val_loss'].iloc[-1]:.4f}\n"
)

with mlflow.start_run(run_name="artifacts-demo") as run:
    mlflow.log_figure(fig, "plots/loss_curve.png")
    with tempfile.TemporaryDirectory() as tmp_dir:
        csv_path = Path(tmp_dir) / "loss_history.csv"
        history_df.to_csv(csv_path, index=False)
        mlflow.log_artifact(str(csv_path))
    mlflow.log_dict(train_config, "config/train_config.json")
    mlflow.log_text(summary_text, "notes/summary.txt")
plt.close(fig)

artifacts_run_id = run.info.run_id
print(f"Artifact URI ของ Run: {run.info.artifact_uri}")


# %% [markdown]
# ดูรายการไฟล์ทั้งหมดของ Run (โฟลเดอร์จะแสดงเป็น 📁) แล้วอ่านไฟล์กลับมาใช้งาน


# %%
def show_artifacts(run_id, path=None, indent=""):
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            print(f"{indent}📁 {item.path}/")
            show_artifacts(run_id, item.path, indent + "    ")
        else:
            print(f"{indent}📄 {item.path} ({item.file_size} bytes)")


show_artifacts(artifacts_run_id)

# %%
run_uri = f"runs:/{artifacts_run_id}"

loaded_config = mlflow.artifacts.load_dict(f"{run_uri}/config/train_config.json")
print(f"JSON -> {loaded_config}")

loaded_text = mlflow.artifacts.load_text(f"{run_uri}/notes/summary.txt")
print(f"TEXT -> {loaded_text.strip()}")

with tempfile.TemporaryDirectory() as tmp_dir:
    csv_file = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{run_uri}/loss_history.csv", dst_path=tmp_dir
    )
    print(f"CSV  -> {len(pd.read_csv(csv_file))} แถว")
    png_file = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{run_uri}/plots/loss_curve.png", dst_path=tmp_dir
    )
    with Image.open(png_file) as image:
        print(f"PNG  -> {image.format} ขนาด {image.size[0]}x{image.size[1]} pixels")

# %% [markdown]
# ## ส่วนที่ 6: การบันทึก Model
#
# MLflow เก็บ Model พร้อมข้อมูลที่จำเป็นต่อการนำไปใช้ต่อ:
#
# - **signature** บอกหน้าตาของ input/output (สร้างด้วย `infer_signature`)
# - **input_example** ตัวอย่าง input จริง 2-3 แถว
# - ใช้ `name="model"` เป็นชื่อ Model (MLflow 3 ไม่ใช้ `artifact_path` แล้ว)
#
# ข้อมูลที่ใช้คือ Iris ซึ่งมากับ scikit-learn (ไม่ต้องดาวน์โหลด)

# %%
iris = load_iris(as_frame=True)
X = iris.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
y = iris.target
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.2, random_state=SEED, stratify=y
)
print(f"train: {X_train.shape}, test: {X_test.shape}")
print(f"classes: {iris.target_names.tolist()}")

# %% [markdown]
# ### 6.1 scikit-learn: RandomForestClassifier

# %%
rf_params = {"n_estimators": 20, "max_depth": 3, "random_state": SEED}

with mlflow.start_run(run_name="sklearn-random-forest") as run:
    mlflow.log_params(rf_params)
    mlflow.log_param("dataset", "iris")

    rf_model = RandomForestClassifier(**rf_params).fit(X_train, y_train)
    test_accuracy = accuracy_score(y_test, rf_model.predict(X_test))
    mlflow.log_metric("test_accuracy", test_accuracy)

    signature = infer_signature(X_train, rf_model.predict(X_train))
    rf_info = mlflow.sklearn.log_model(
        sk_model=rf_model,
        name="model",
        signature=signature,
        input_example=X_train.head(3),
    )

print(f"test_accuracy: {test_accuracy:.4f}")
print(f"model_uri    : {rf_info.model_uri}")
print(f"signature    : {rf_info.signature}")

# %% [markdown]
# โหลด Model กลับมาได้ 2 แบบ:
# `mlflow.pyfunc.load_model` (รูปแบบกลาง ใช้ `.predict()` ได้กับทุก framework)
# และ `mlflow.sklearn.load_model` (ได้ object ของ scikit-learn กลับมาตรง ๆ)

# %%
pyfunc_model = mlflow.pyfunc.load_model(rf_info.model_uri)
sample = X_test.head(5)
print(f"pyfunc predict : {pyfunc_model.predict(sample).tolist()}")
print(f"ค่าจริง (y_test): {y_test.head(5).tolist()}")

sk_model = mlflow.sklearn.load_model(rf_info.model_uri)
first_proba = sk_model.predict_proba(sample.head(1)).round(3).tolist()
print(f"sklearn predict_proba แถวแรก: {first_proba}")


# %% [markdown]
# ### 6.2 PyTorch: โครงข่ายประสาทเทียมขนาดเล็ก
#
# สร้าง `nn.Module` ที่ normalize ข้อมูลในตัว แล้ว train แบบ full-batch สั้น ๆ
# ระหว่าง train บันทึก `train_loss` ทุก epoch ด้วย `step=`


# %%
class IrisNet(nn.Module):
    def __init__(self, mean, std, n_features=4, n_classes=3, hidden=16):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.layers = nn.Sequential(
            nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)
        )

    def forward(self, x):
        return self.layers((x - self.mean) / self.std)


X_train_np = X_train.to_numpy(dtype=np.float32)
X_test_np = X_test.to_numpy(dtype=np.float32)
X_train_t = torch.from_numpy(X_train_np)
y_train_t = torch.from_numpy(y_train.to_numpy())

torch_params = {"hidden": 16, "epochs": 30, "learning_rate": 0.05, "optimizer": "Adam"}
torch.manual_seed(SEED)
net = IrisNet(X_train_np.mean(axis=0), X_train_np.std(axis=0), hidden=torch_params["hidden"])
optimizer = torch.optim.Adam(net.parameters(), lr=torch_params["learning_rate"])
loss_fn = nn.CrossEntropyLoss()

with mlflow.start_run(run_name="pytorch-mlp") as run:
    mlflow.log_params(torch_params)
    for epoch in range(1, torch_params["epochs"] + 1):
        net.train()
        optimizer.zero_grad()
        loss = loss_fn(net(X_train_t), y_train_t)
        loss.backward()
        optimizer.step()
        mlflow.log_metric("train_loss", loss.item(), step=epoch)

    net.eval()
    with torch.no_grad():
        test_pred = net(torch.from_numpy(X_test_np)).argmax(dim=1).numpy()
        train_logits = net(X_train_t).numpy()
    torch_accuracy = accuracy_score(y_test, test_pred)
    mlflow.log_metric("test_accuracy", torch_accuracy)

    torch_info = mlflow.pytorch.log_model(
        pytorch_model=net,
        name="model",
        signature=infer_signature(X_train_np, train_logits),
        input_example=X_train_np[:3],
    )

print(f"final train_loss: {loss.item():.4f}")
print(f"test_accuracy   : {torch_accuracy:.4f}")
print(f"model_uri       : {torch_info.model_uri}")

# %%
loaded_net = mlflow.pytorch.load_model(torch_info.model_uri)
loaded_net.eval()
with torch.no_grad():
    logits = loaded_net(torch.from_numpy(X_test_np[:5]))
print(f"PyTorch predict: {logits.argmax(dim=1).tolist()}")
print(f"ค่าจริง (y_test): {y_test.head(5).tolist()}")

# %% [markdown]
# ### 6.3 Autologging
#
# `mlflow.sklearn.autolog()` บันทึก parameters, metrics และ model ให้เองทุกครั้งที่เรียก `.fit()`
# ใช้เสร็จแล้วควรปิดด้วย `autolog(disable=True)` เพื่อไม่ให้ส่วนถัดไปถูกบันทึกซ้ำโดยไม่ตั้งใจ

# %%
mlflow.sklearn.autolog()
with mlflow.start_run(run_name="sklearn-autolog") as run:
    auto_model = RandomForestClassifier(n_estimators=25, max_depth=3, random_state=SEED)
    auto_model.fit(X_train, y_train)
mlflow.sklearn.autolog(disable=True)

auto_run = client.get_run(run.info.run_id)
print(f"autolog บันทึก params {len(auto_run.data.params)} ค่า เช่น:")
for key in ["n_estimators", "max_depth", "criterion"]:
    print(f"  {key} = {auto_run.data.params[key]}")
print("metrics:")
for key, value in sorted(auto_run.data.metrics.items()):
    print(f"  {key} = {value:.4f}")
print("artifacts:", [a.path for a in client.list_artifacts(run.info.run_id)])

# %% [markdown]
# ## ส่วนที่ 7: Nested Runs
#
# เวลาทำ **hyperparameter search** เราจะได้ Run จำนวนมาก
# วิธีที่เป็นระเบียบคือสร้าง **parent run** 1 อัน แล้วให้แต่ละ trial เป็น **child run**
# ด้วย `mlflow.start_run(nested=True)` ใน MLflow UI child run จะถูกจัดกลุ่มอยู่ใต้ parent
#
# จากนั้นบันทึกค่าที่ดีที่สุดไว้ที่ parent เพื่อให้ดูได้ในที่เดียว

# %%
search_space = [
    {"n_estimators": n_estimators, "max_depth": max_depth}
    for n_estimators in (10, 30)
    for max_depth in (1, 2, 4)
]

trials = []
with mlflow.start_run(run_name="rf-grid-search") as parent_run:
    mlflow.log_param("n_trials", len(search_space))
    for i, params in enumerate(search_space, start=1):
        with mlflow.start_run(run_name=f"trial-{i}", nested=True) as child_run:
            mlflow.log_params(params)
            candidate = RandomForestClassifier(random_state=SEED, **params)
            cv_accuracy = cross_val_score(candidate, X_train, y_train, cv=3).mean()
            candidate.fit(X_train, y_train)
            trial_test_accuracy = accuracy_score(y_test, candidate.predict(X_test))
            mlflow.log_metrics({"cv_accuracy": cv_accuracy, "test_accuracy": trial_test_accuracy})
            trials.append(
                {
                    "trial": f"trial-{i}",
                    **params,
                    "cv_accuracy": cv_accuracy,
                    "test_accuracy": trial_test_accuracy,
                    "run_id": child_run.info.run_id,
                }
            )

    # เลือก trial ที่ cv_accuracy สูงสุด (ถ้าเท่ากัน ดู test_accuracy ต่อ)
    best = max(trials, key=lambda t: (t["cv_accuracy"], t["test_accuracy"]))
    mlflow.log_params(
        {"best_n_estimators": best["n_estimators"], "best_max_depth": best["max_depth"]}
    )
    mlflow.log_metrics(
        {
            "best_cv_accuracy": best["cv_accuracy"],
            "best_test_accuracy": best["test_accuracy"],
        }
    )
    mlflow.set_tag("best_trial", best["trial"])

parent_run_id = parent_run.info.run_id
print(pd.DataFrame(trials).drop(columns="run_id").round(4).to_string(index=False))
print(
    f"\n🏆 best: {best['trial']} "
    f"(n_estimators={best['n_estimators']}, max_depth={best['max_depth']}, "
    f"cv_accuracy={best['cv_accuracy']:.4f})"
)

# %% [markdown]
# ## ส่วนที่ 8: การค้นหาผลลัพธ์และดูใน MLflow UI
#
# `mlflow.search_runs()` ค้นหา Run แล้วคืนผลเป็น pandas DataFrame
#
# - `filter_string` กรองแบบคล้าย SQL เช่น `"metrics.test_accuracy >= 0.9"`,
#   `"params.max_depth = '2'"`, `"tags.mlflow.parentRunId = '<run_id>'"`
# - `order_by` เรียงลำดับ เช่น `["metrics.test_accuracy DESC"]`
#
# หมายเหตุ: ถ้ารัน Lab ซ้ำ ผลการค้นหาจะรวม Run จากรอบก่อน ๆ ด้วย

# %%
children_df = mlflow.search_runs(
    experiment_names=[EXPERIMENT_NAME],
    filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
    order_by=["metrics.cv_accuracy DESC", "metrics.test_accuracy DESC"],
)
columns = [
    "tags.mlflow.runName",
    "params.n_estimators",
    "params.max_depth",
    "metrics.cv_accuracy",
    "metrics.test_accuracy",
]
print(f"child runs ของ rf-grid-search: {len(children_df)} runs")
print(children_df[columns].round(4).to_string(index=False))

# %%
top_df = mlflow.search_runs(
    experiment_names=[EXPERIMENT_NAME],
    filter_string="metrics.test_accuracy >= 0.9 and attributes.status = 'FINISHED'",
    order_by=[
        "metrics.test_accuracy DESC",
        "metrics.cv_accuracy DESC",
        "attributes.start_time DESC",
    ],
    max_results=5,
)
print("Top 5 runs ตาม test_accuracy (ถ้าเท่ากันดู cv_accuracy แล้วเอา Run ที่ใหม่กว่า):")
top_columns = ["tags.mlflow.runName", "metrics.test_accuracy", "metrics.cv_accuracy"]
print(top_df[top_columns].round(4).to_string(index=False))

best_run = top_df.iloc[0]
best_run_id = best_run["run_id"]
print(f"\n🏆 Run ที่ดีที่สุด: {best_run['tags.mlflow.runName']} ({best_run_id})")

# %% [markdown]
# ติด **tag** ให้ Run ที่เลือก เพื่อให้ทีมรู้ว่า Run ไหนผ่านการคัดเลือกแล้ว
# (Run ที่จบไปแล้วก็ยังเพิ่มหรือลบ tag ได้ผ่าน `MlflowClient().set_tag` / `delete_tag`)
#
# ถ้าเคยรัน Lab มาก่อน จะมี Run เก่าที่ติด tag นี้อยู่ เราจึงค้นหาด้วย tag แล้วลบออกก่อน
# ให้เหลือ `best-candidate` เพียง Run เดียวเสมอ

# %%
TAG_FILTER = "tags.review_status = 'best-candidate'"

previous_df = mlflow.search_runs(experiment_names=[EXPERIMENT_NAME], filter_string=TAG_FILTER)
for old_run_id in previous_df["run_id"]:
    client.delete_tag(old_run_id, "review_status")
print(f"ลบ tag ออกจาก Run เก่า: {len(previous_df)} runs")

for key, value in {"review_status": "best-candidate", "reviewed_by": "student"}.items():
    client.set_tag(best_run_id, key, value)

tagged_df = mlflow.search_runs(experiment_names=[EXPERIMENT_NAME], filter_string=TAG_FILTER)
print(f"Run ที่มี tag review_status='best-candidate': {len(tagged_df)} run")
tag_columns = ["run_id", "tags.mlflow.runName", "tags.reviewed_by"]
print(tagged_df[tag_columns].to_string(index=False))

exp_id = experiment.experiment_id
ui_url = f"{mlflow.get_tracking_uri()}/#/experiments/{exp_id}/runs/{best_run_id}"
total_runs = len(mlflow.search_runs(experiment_ids=[exp_id]))
print(f"\n🔗 ดูใน MLflow UI: {ui_url}")
print(f"📊 จำนวน Run ทั้งหมดใน Experiment: {total_runs}")

# %% [markdown]
# ## สรุปและ Best Practices
#
# - **ตั้งชื่อให้สื่อความหมาย** ทั้ง Experiment (`mlflow-tracking-lab`) และ Run (`sklearn-random-forest`)
# - **ใช้ `with mlflow.start_run()` เสมอ** Run จะถูกปิดให้เองแม้โค้ดจะเกิด error
# - **บันทึก parameters ให้ครบ** รวมถึง random seed และชื่อ dataset เพื่อให้ทำซ้ำได้
# - **ใช้ `step=` กับ metric ที่เปลี่ยนตาม epoch** จะได้กราฟ learning curve ใน UI
# - **เก็บไฟล์ประกอบเป็น artifact** (กราฟ, config, ตัวอย่างผลลัพธ์) แยกโฟลเดอร์ให้เป็นระเบียบ
# - **log model พร้อม signature และ input_example** เพื่อให้คนอื่นโหลดไปใช้ได้ถูกต้อง
# - **ใช้ nested runs กับ hyperparameter search** และบันทึกผลที่ดีที่สุดไว้ที่ parent
# - **ใช้ tags** จัดหมวดหมู่และติดสถานะ Run แล้วค้นหาด้วย `search_runs(filter_string=...)`
# - **ปิด autolog หลังใช้งาน** หากไม่ต้องการให้ทุก `.fit()` ถูกบันทึก
