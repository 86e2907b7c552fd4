"""Evaluation metrics of the tasks: pure functions of labels and predictions."""
from __future__ import annotations

import numpy as np


def accuracy(labels, predictions) -> float:
    return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def binary_f1(labels, predictions, positive: int = 1) -> float:
    """F1 of the `positive` class (0 when it is never predicted correctly)."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    tp = int(np.sum((predictions == positive) & (labels == positive)))
    fp = int(np.sum((predictions == positive) & (labels != positive)))
    fn = int(np.sum((predictions != positive) & (labels == positive)))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def accuracy_and_f1(labels, predictions) -> dict:
    """MRPC's GLUE metrics: accuracy and F1 of the positive (paraphrase) class."""
    return {"accuracy": accuracy(labels, predictions), "f1": binary_f1(labels, predictions)}


def matthews(labels, predictions) -> float:
    """Matthews correlation of binary predictions (CoLA's metric); 0 when a margin is empty."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    tp = float(np.sum((predictions == 1) & (labels == 1)))
    tn = float(np.sum((predictions == 0) & (labels == 0)))
    fp = float(np.sum((predictions == 1) & (labels == 0)))
    fn = float(np.sum((predictions == 0) & (labels == 1)))
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denominator) if denominator else 0.0


def pearson(labels, predictions) -> float:
    labels, predictions = np.asarray(labels, np.float64), np.asarray(predictions, np.float64)
    if labels.std() == 0 or predictions.std() == 0:
        return 0.0
    return float(np.corrcoef(labels, predictions)[0, 1])


def spearman(labels, predictions) -> float:
    """Pearson correlation of the ranks, ties given their mean rank (as scipy's spearmanr)."""
    return pearson(_ranks(labels), _ranks(predictions))


def _ranks(values) -> np.ndarray:
    values = np.asarray(values, np.float64)
    ranks = np.empty(len(values))
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    _, inverse = np.unique(values, return_inverse=True)
    return (np.bincount(inverse, ranks) / np.bincount(inverse))[inverse]  # ties: their mean rank


METRICS = {"accuracy": accuracy, "f1": binary_f1, "matthews": matthews, "pearson": pearson, "spearman": spearman}


def task_metrics(names, labels, predictions) -> dict:
    """{name: value} for the metric names of a task (`glue_tasks.Task.metrics`)."""
    return {name: METRICS[name](labels, predictions) for name in names}
