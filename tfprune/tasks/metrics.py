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
