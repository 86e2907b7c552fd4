"""Knowledge distillation from a fine-tuned teacher, as a Keras loss over targets that carry the teacher's
outputs next to the labels, so the student trains with plain `fit` (pruning callbacks, checkpoints and all).

The teacher runs in inference mode (no dropout), so its outputs are a fixed function of each example:
computing them once for the training set (`teacher_targets`) gives the same loss as running the teacher at
every step, at a fraction of the cost.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfprune.errors import TfpruneError


def teacher_targets(labels: np.ndarray, teacher_logits: np.ndarray) -> np.ndarray:
    """(examples, 1 + outputs) float32: the label in column 0, the teacher's logits (or score) after it."""
    labels = np.asarray(labels, np.float32).reshape(-1, 1)
    teacher_logits = np.asarray(teacher_logits, np.float32).reshape(len(labels), -1)
    return np.concatenate([labels, teacher_logits], axis=1)


def task_loss(regression: bool):
    """The plain fine-tuning loss on logits: cross-entropy over classes, or MSE for a single score."""
    from tfprune._keras import keras

    if regression:
        return keras.losses.MeanSquaredError()
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def distillation_loss(alpha: float = 0.5, temperature: float = 2.0, regression: bool = False):
    """loss(targets, logits), targets as `teacher_targets` makes them.

    Classification: alpha * CE(label, logits) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(logits / T))
    (Hinton et al. 2015; T^2 keeps the soft term's gradients on the hard term's scale as T grows).
    Regression: alpha * MSE(label, score) + (1 - alpha) * MSE(teacher's score, score).

    Raises:
        TfpruneError: alpha outside [0, 1], or a temperature that is not a finite number > 0.
    """
    if not 0.0 <= alpha <= 1.0:
        raise TfpruneError(f"alpha (the hard-label weight) must be in [0, 1], got {alpha}")
    if not 0.0 < temperature < float("inf"):
        raise TfpruneError(f"temperature must be a finite number > 0, got {temperature}")

    def loss(targets, logits):
        targets = tf.cast(targets, logits.dtype)
        labels, teacher = targets[:, 0], targets[:, 1:]
        if regression:
            score = logits[:, 0]
            hard = tf.reduce_mean(tf.square(score - labels))
            soft = tf.reduce_mean(tf.square(score - teacher[:, 0]))
        else:
            hard = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(labels, tf.int32), logits))
            teacher_probs = tf.nn.softmax(teacher / temperature)
            kl = tf.reduce_sum(teacher_probs * (tf.nn.log_softmax(teacher / temperature)
                                                - tf.nn.log_softmax(logits / temperature)), axis=-1)
            soft = temperature ** 2 * tf.reduce_mean(kl)
        return alpha * hard + (1.0 - alpha) * soft

    loss.__name__ = "distillation_loss"
    return loss
