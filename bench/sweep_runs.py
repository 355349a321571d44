"""Shared by the benchmarks that run real sweeps: write a sweep file around the demo trial,
run `mtsweep launch` as a user would (a subprocess), and read back what MLflow recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DEMO_YAML = REPO / "search_spaces" / "trials" / "tiny_demo.yaml"
TASKS = ("sst", "para", "sts")


def demo_data(work: Path) -> Path:
    from trainables.data.demo import write_demo_data

    data = work / "demo-data"
    if not (data / "quora-train.csv").exists():
        write_demo_data(data, seed=0)
    return data


def trial_dict(data_dir: Path, train_limit: int, dev_limit: int, epochs: int) -> dict[str, Any]:
    """The demo trial (tiny encoder) on `data_dir` with the given sizes."""
    from trainables.config import TrialConfig

    return TrialConfig.load(DEMO_YAML).replace({
        "epochs": epochs,
        "data.dir": str(data_dir),
        "data.format": "cs224n",
        "data.train_limit": dict.fromkeys(TASKS, train_limit),
        "data.dev_limit": dict.fromkeys(TASKS, dev_limit),
    }).to_dict()


@dataclass
class SweepRun:
    wall_s: float
    summary: dict[str, Any]
    tracking_uri: str
    stderr: str
    started: float = 0.0  # the command's start and end, seconds since the epoch
    ended: float = 0.0

    def trials_by_start(self) -> list[dict[str, Any]]:
        """The summary's trials in the order they started."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri)
        return sorted(self.summary["trials"],
                      key=lambda t: client.get_run(t["run_id"]).info.start_time)

    def trial_spans(self) -> list[tuple[float, float]]:
        """(start, end) of every trial's MLflow run, seconds since the epoch."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri)
        infos = [client.get_run(t["run_id"]).info for t in self.summary["trials"]]
        return [(i.start_time / 1000, (i.end_time or i.start_time) / 1000) for i in infos]

    def histories(self, metric: str) -> dict[str, list[tuple[int, float]]]:
        """Per trial run id: (step, value) of `metric`, from MLflow."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri)
        return {t["run_id"]: sorted((h.step, h.value)
                                    for h in client.get_metric_history(t["run_id"], metric))
                for t in self.summary["trials"]}


def launch(work: Path, name: str, sweep: dict[str, Any], timeout: float = 900) -> SweepRun:
    """Run `mtsweep launch` on `sweep` in `work` (its own MLflow store, Ray storage and token
    cache) and time it end to end."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **sweep}, sort_keys=False))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "MTSWEEP_CACHE": str(work / "cache"), "TOKENIZERS_PARALLELISM": "false"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    started, t0 = time.time(), time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "launch", str(path), "--json",
         "--storage", str(work / "runs"), "--tracking-uri", uri],
        cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"mtsweep launch failed ({proc.returncode}): {proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return SweepRun(wall, summary, uri, proc.stderr, started, started + wall)
