"""Sequence pruning, the part any model shares: how many tokens an example keeps at a rate, and the
selection of the most significant ones, gathered in their original order with the mask carried along.
Used by BERT's token pruner (models/bert/token_pruning.py) and the LSTM classifier's (models/lstm.py)."""
from __future__ import annotations

import math

_PROTECTED = 1e4  # added to the scores of tokens always kept ([SEP]; [CLS] twice, so it outranks them); the
# attention a token receives is at most the sequence length
_PADDING = -1e9  # below any learned score
_ROUNDING = 1e-4  # (1 - rate) x n within this of an integer counts as that integer, in float32 and float64 alike


def kept_count(rate: float, tokens: int) -> int:
    """Tokens one example keeps of `tokens` after a pruner of `rate`: ceil((1 - rate) x tokens)."""
    return math.ceil((1.0 - rate) * tokens - _ROUNDING) if rate > 0 else tokens


def select(hidden, mask, scores, rate: float, protected=None, keep_first: bool = True):
    """(hidden, mask, positions) of the kept tokens: per example ceil((1 - rate) x real tokens) by `scores`,
    position 0 first (unless not `keep_first`), then the `protected` positions, gathered in their original
    order; the sequence is cut to the largest count and the slots past an example's count are padding."""
    import tensorflow as tf

    length = tf.shape(hidden)[1]
    keep = tf.cast(tf.math.ceil((1.0 - rate) * tf.reduce_sum(mask, axis=1) - _ROUNDING), tf.int32)  # kept_count
    width = tf.reduce_max(keep)
    bonus = 2.0 * tf.cast(tf.equal(tf.range(length), 0), scores.dtype)[None, :] if keep_first else 0.0 * scores
    if protected is not None:
        bonus = tf.maximum(bonus, tf.cast(protected, scores.dtype))
    scores = tf.where(mask > 0, scores + _PROTECTED * bonus, _PADDING)
    _, order = tf.math.top_k(scores, k=width)  # best first
    dropped = tf.range(width)[None, :] >= keep[:, None]
    order = tf.sort(tf.where(dropped, order + length, order), axis=1)  # kept in order, then the dropped
    kept = order < length
    order = tf.where(kept, order, order - length)
    return tf.gather(hidden, order, batch_dims=1), tf.cast(kept, mask.dtype), order
