"""Training penalties that make a network robust to one-shot pruning.

L1 on weights pushes most of them towards zero, so magnitude pruning removes little that matters; group
lasso on output columns (the L2 norm of each unit's incoming weights) does the same for whole units. Neither
prunes anything itself: they shape the trained weights that a criterion later ranks.
"""
from __future__ import annotations

import tensorflow as tf

from tfprune._keras import keras
from tfprune.errors import TfpruneError


@keras.utils.register_keras_serializable(package="tfprune")
class PruningFriendly(keras.regularizers.Regularizer):
    def __init__(self, l1: float = 0.0, group: float = 0.0):
        if l1 < 0 or group < 0:
            raise TfpruneError(f"l1 and group must be >= 0, got l1={l1}, group={group}")
        self.l1, self.group = float(l1), float(group)

    def __call__(self, kernel):
        penalty = tf.constant(0.0, kernel.dtype)
        if self.l1:
            penalty += self.l1 * tf.reduce_sum(tf.abs(kernel))
        if self.group:
            penalty += self.group * tf.reduce_sum(tf.sqrt(tf.reduce_sum(tf.square(kernel), axis=0) + 1e-12))
        return penalty

    def get_config(self):
        return {"l1": self.l1, "group": self.group}
