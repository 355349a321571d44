"""Dev-set metrics of the three tasks and the two overall scores."""

from __future__ import annotations

import numpy as np


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    return float((pred == gold).mean()) if len(gold) else float("nan")


def pearson(pred: np.ndarray, gold: np.ndarray) -> float:
    """Pearson r; 0.0 when either side is constant (r is undefined there, and a model that
    predicts a constant has learned nothing about the ranking)."""
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(gold, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else 0.0


def confusion_matrix(pred: np.ndarray, gold: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts; rows = gold class, columns = predicted class."""
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(gold, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return m


# The metric each task reports, by the names the rest of mtsweep uses.
TASK_METRIC = {"sst": "sst_acc", "para": "para_acc", "sts": "sts_corr"}


def overall_scores(metrics: dict[str, float]) -> dict[str, float]:
    """`overall`: the CS224N leaderboard score, mean of SST acc, QQP acc and (r + 1) / 2;
    `overall_mean`: the plain mean of the three (the study's Table 3). Over the tasks present."""
    norm, plain = [], []
    for task, key in TASK_METRIC.items():
        if key in metrics:
            v = metrics[key]
            plain.append(v)
            norm.append((v + 1) / 2 if task == "sts" else v)
    if not plain:
        return {}
    return {"overall": float(np.mean(norm)), "overall_mean": float(np.mean(plain))}
